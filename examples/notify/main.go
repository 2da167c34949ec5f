// Command notify pushes notifications to every open tab of a user, on any
// node: POST /notify/{user} with a bearer token and {"text":"..."}; each
// tab of that user, connected to /ws/notify/?user=NAME on whichever node,
// gets {"type":"notify","text":"..."}.
//
//	go run ./examples/notify                          # one process
//	go run ./examples/notify -redis 127.0.0.1:6379 -addr localhost:3001   # many
//
// The user comes from the query string to keep the example short; a real
// app identifies users with a session (see package auth).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log"
	"net/http"

	"github.com/redis/go-redis/v9"

	"github.com/chatterpro/chatterpro/channellayer"
	"github.com/chatterpro/chatterpro/consumer"
	"github.com/chatterpro/chatterpro/publish"
	"github.com/chatterpro/chatterpro/routing"
)

// newApp routes the consumer and the notify endpoint on layer.
func newApp(srv *consumer.Server, layer channellayer.Layer, token string) (http.Handler, error) {
	router, err := routing.New(routing.Options{Server: srv, Identify: userFromQuery})
	if err != nil {
		return nil, err
	}
	// Every tab of a user joins the user's group and shows what reaches it.
	router.Consumer("/ws/notify/", func() consumer.Consumer {
		return &consumer.JSON{OnConnect: func(ctx context.Context, c *consumer.Conn) error {
			c.On("notify", func(ctx context.Context, c *consumer.Conn, m channellayer.Message) error {
				return c.Send(m.Body)
			})
			return c.GroupAdd(ctx, "user:"+c.Scope().User.Name)
		}}
	})
	// A server-side job or another service notifies a user.
	router.HandleFunc("POST /notify/{user}", func(w http.ResponseWriter, r *http.Request) {
		if !publish.Authorized(r, token) {
			http.Error(w, "send Authorization: Bearer <token>", http.StatusUnauthorized)
			return
		}
		var in struct{ Text string }
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&in); err != nil || in.Text == "" {
			http.Error(w, `send {"text":"..."}`, http.StatusBadRequest)
			return
		}
		m, _ := channellayer.NewMessage("notify", map[string]string{"text": in.Text})
		if err := layer.GroupSend(r.Context(), "user:"+r.PathValue("user"), m); err != nil {
			http.Error(w, "not sent, retry", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	return router, nil
}

func userFromQuery(r *http.Request) (*consumer.User, error) {
	name := r.URL.Query().Get("user")
	if name == "" {
		return nil, errors.New("add ?user=NAME")
	}
	return &consumer.User{Name: name, Session: name}, nil
}

func main() {
	addr := flag.String("addr", "localhost:3000", "listen address")
	redisAddr := flag.String("redis", "", "Redis address (host:port) to share users with other nodes; empty: one process")
	token := flag.String("token", "dev-token", "bearer token of POST /notify/{user}")
	flag.Parse()
	ctx := context.Background()
	var layer channellayer.Layer
	var err error
	if *redisAddr != "" {
		layer, err = channellayer.NewRedis(ctx, redis.NewClient(&redis.Options{Addr: *redisAddr}), channellayer.RedisOptions{})
	} else {
		layer, err = channellayer.NewMemory(channellayer.MemoryOptions{})
	}
	if err != nil {
		log.Fatal(err)
	}
	srv, err := consumer.NewServer(consumer.Options{Layer: layer})
	if err != nil {
		log.Fatal(err)
	}
	app, err := newApp(srv, layer, *token)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("notify: listening on http://%s", *addr)
	log.Fatal(http.ListenAndServe(*addr, app))
}
