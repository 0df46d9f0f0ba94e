chmod 755 context/m/exec
chmod 600 context/m/private
chmod 711 context/m
