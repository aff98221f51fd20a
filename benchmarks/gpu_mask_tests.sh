set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl_llm/*.whl > /tmp/pip.log 2>&1 || { tail -5 /tmp/pip.log; exit 3; }
mkdir -p /tmp/site/smartcompile-0.dist-info
printf 'Metadata-Version: 2.1\nName: smartcompile\nVersion: 0\n' > /tmp/site/smartcompile-0.dist-info/METADATA
printf '[console_scripts]\nsmartcompile = smartcompile.cli:main\n\n[torch_dynamo_backends]\nsmartattn = smartcompile.compiler.backend:smartattn\n' > /tmp/site/smartcompile-0.dist-info/entry_points.txt
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 200 python3 -m pytest -q -p no:cacheprovider -rf tests/test_sparge_padding.py tests/test_gpu_sparge.py tests/test_key_padding_forms.py tests/test_mask_forms.py > $OUT/gpu_tests_sparge_padding.log 2>&1; echo RC=$?; tail -6 $OUT/gpu_tests_sparge_padding.log
