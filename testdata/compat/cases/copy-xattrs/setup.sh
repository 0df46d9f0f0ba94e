python3 -c "import os; os.setxattr('context/x/f', 'user.kiln', b'v')"
