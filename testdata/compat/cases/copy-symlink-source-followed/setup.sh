ln -s target.txt context/link
