source code
