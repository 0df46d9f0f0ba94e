ln -s f context/dir/link
ln -s /etc/passwd context/dir/abs
