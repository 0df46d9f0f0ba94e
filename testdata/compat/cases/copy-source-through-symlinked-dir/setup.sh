mkdir -p context/releases/v2/bin && echo ctx-x > context/releases/v2/bin/x && ln -s releases/v2 context/current
