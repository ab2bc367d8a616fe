"""The ground both wings stand on: it imports nothing above it.

    recipe.py     the recipe schema (pydantic), loading and --set overrides
    data.py       data sets and preprocessing
    models.py     the model factory, structure records, sizes
    precision.py  the one owner of fp32 / fp16 / int8
    errors.py     the error family (exit 2 for the user's input)
    console.py    the rich console and progress bars
    rundir.py     run directories, atomic writes
"""
