import sys

try:
    from app.cli import main
except ModuleNotFoundError as exc:  # run with a Python that lacks the project's dependencies
    sys.exit(
        f"python -m app: {exc.name!r} is not installed for {sys.executable}; "
        "run `make install`, then `.venv/bin/python -m app ...`"
    )

sys.exit(main())
