// go_echo is the comparison point most tutorials lead to: one goroutine per
// connection, a bufio.Reader that hands back each line as a new string, and
// the reply "ECHO: <line>" flushed on its own, one write system call per
// line. It is written the way the lessons teach it, not tuned; the benchmark
// measures what that idiom costs next to an event loop.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func serve(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		w.WriteString("ECHO: ")
		w.WriteString(line)
		w.WriteByte('\n')
		if err := w.Flush(); err != nil {
			return
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (HOST:PORT)")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_echo:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())

	for {
		conn, err := ln.Accept()
		if err != nil {
			// Out of descriptors, most likely: say so and retry shortly,
			// as net/http does, rather than spin.
			fmt.Fprintln(os.Stderr, "go_echo: accept:", err)
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go serve(conn)
	}
}
