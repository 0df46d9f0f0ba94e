python3 "$COMPAT/make-archives.py"
