module tcpkit/bench/go_hub

go 1.19
