"""``python -m appliance`` and the PyInstaller entry point."""
import multiprocessing

if __name__ == "__main__":
    multiprocessing.freeze_support()  # first: a frozen binary must not re-run the CLI in children
    from appliance.cli import main

    main()
