"""Run the audioguide CLI from a source checkout: ``python cli.py tts "Hello." -o out.wav``."""

from audioguide.cli import main

if __name__ == "__main__":
    main()
