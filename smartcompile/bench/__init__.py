"""`smartcompile bench`: speed, peak memory and quality of Flash, Sage and Sparge on this machine.

    cases.py    the grid (shapes, variants) and option validation
    measure.py  timing (do_bench / CUDA events / wall clock), FLOPs, peak memory
    quality.py  cosine / rel L1 / PSNR against a sliced fp32 exact reference
    grid.py     every variant on every shape, through the backend registry
    model.py    --model: a user's model end to end under several policies
    tables.py   markdown;  plot.py: bench.png;  command.py: the command itself
    options.py  its command-line options (imported by the CLI parser: keep it light)

Nothing is imported here, so that building the CLI parser stays cheap.
"""
