# Sourced by the scripts beside it (after they cd to the checkout): what they all need.

# A free TCP port on loopback, for a process the script starts.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
