mkdir -p context/odd
python3 -c "open(b'context/odd/caf\xe9.txt', 'wb').write(b'latin1\n')"
