mkfifo context/ctx/fifo
