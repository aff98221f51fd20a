# Sourced by the device-call scripts: install the carried wheels from folder $1 into /tmp/site and register the
# package (a minimal dist-info with the smartattn backend and console-script entry points, no pip -e).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$1"/*.whl \
    > /tmp/pip.log 2>&1 || { tail -5 /tmp/pip.log; exit 3; }
mkdir -p /tmp/site/smartcompile-0.dist-info
printf 'Metadata-Version: 2.1\nName: smartcompile\nVersion: 0\n' > /tmp/site/smartcompile-0.dist-info/METADATA
printf '[console_scripts]\nsmartcompile = smartcompile.cli:main\n\n[torch_dynamo_backends]\nsmartattn = smartcompile.compiler.backend:smartattn\n' \
    > /tmp/site/smartcompile-0.dist-info/entry_points.txt
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
