// go_hub is the chat server the Go tutorials build, used as a comparison
// point for the chat fan-out benchmark: a goroutine per client reading
// lines, one hub goroutine that owns the client set and takes register,
// unregister and broadcast requests over channels, and every message
// marshalled with encoding/json and written to each client through its
// bufio.Writer with a Flush per message, under a RWMutex. It is written the
// way those lessons teach it, not tuned.
//
// Protocol: a client sends its name as its first line; every later line is a
// chat message broadcast to every client, the sender included, as
//
//	{"from":NAME,"content":TEXT,"timestamp":RFC3339,"type":"message"}
//
// A new client is announced to everyone with a "join" message from "server".
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

type Message struct {
	From      string `json:"from"`
	Content   string `json:"content"`
	Timestamp string `json:"timestamp"`
	Type      string `json:"type"`
}

type Client struct {
	conn   net.Conn
	name   string
	writer *bufio.Writer
}

type Hub struct {
	mu         sync.RWMutex
	clients    map[*Client]bool
	register   chan *Client
	unregister chan *Client
	broadcast  chan Message
}

func newHub() *Hub {
	return &Hub{
		clients:    make(map[*Client]bool),
		register:   make(chan *Client),
		unregister: make(chan *Client),
		broadcast:  make(chan Message, 100),
	}
}

func now() string { return time.Now().UTC().Format(time.RFC3339Nano) }

func (h *Hub) run() {
	for {
		select {
		case c := <-h.register:
			h.mu.Lock()
			h.clients[c] = true
			h.mu.Unlock()
			h.send(Message{From: "server", Content: c.name + " joined", Timestamp: now(), Type: "join"})
		case c := <-h.unregister:
			h.mu.Lock()
			if h.clients[c] {
				delete(h.clients, c)
				c.conn.Close()
			}
			h.mu.Unlock()
		case m := <-h.broadcast:
			h.send(m)
		}
	}
}

// send writes one message to every client, flushing each write.
func (h *Hub) send(m Message) {
	data, err := json.Marshal(m)
	if err != nil {
		return
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.clients {
		c.writer.Write(data)
		c.writer.WriteByte('\n')
		c.writer.Flush() // a failed client is removed by its reader
	}
}

func (h *Hub) serve(conn net.Conn) {
	r := bufio.NewReader(conn)
	name, err := r.ReadString('\n')
	if err != nil {
		conn.Close()
		return
	}
	c := &Client{conn: conn, name: strings.TrimRight(name, "\r\n"), writer: bufio.NewWriter(conn)}
	h.register <- c
	defer func() { h.unregister <- c }()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		h.broadcast <- Message{
			From:      c.name,
			Content:   strings.TrimRight(line, "\r\n"),
			Timestamp: now(),
			Type:      "message",
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (HOST:PORT)")
	flag.Parse()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_hub:", err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", ln.Addr())

	hub := newHub()
	go hub.run()
	for {
		conn, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "go_hub: accept:", err)
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go hub.serve(conn)
	}
}
