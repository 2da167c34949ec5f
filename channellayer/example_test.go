package channellayer_test

import (
	"context"
	"fmt"
	"log"

	"github.com/chatterpro/chatterpro/channellayer"
)

// A group send reaches every channel in the group: here two consumers of a
// chat room.
func ExampleMemory_groupSend() {
	ctx := context.Background()
	layer, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer layer.Close(ctx)

	alice, _ := layer.NewChannel(ctx)
	bob, _ := layer.NewChannel(ctx)
	for _, ch := range []string{alice, bob} {
		if err := layer.GroupAdd(ctx, "room:lobby", ch); err != nil {
			log.Fatal(err)
		}
	}

	msg, err := channellayer.NewMessage("chat.message", map[string]string{"text": "hello, room"})
	if err != nil {
		log.Fatal(err)
	}
	if err := layer.GroupSend(ctx, "room:lobby", msg); err != nil {
		log.Fatal(err)
	}

	for _, ch := range []string{alice, bob} {
		m, err := layer.Receive(ctx, ch)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %s\n", m.Type, m.Body)
	}
	// Output:
	// chat.message: {"type":"chat.message","text":"hello, room"}
	// chat.message: {"type":"chat.message","text":"hello, room"}
}

// A consumer that records messages without waiting for each one: done is
// called once per message, in call order, with the recorded message or the
// error to tell its sender about.
func ExampleRecorder() {
	ctx := context.Background()
	mem, err := channellayer.NewMemory(channellayer.MemoryOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer mem.Close(ctx)

	var layer channellayer.Layer = mem // as a consumer sees it
	rec, ok := layer.(channellayer.Recorder)
	if !ok {
		log.Fatal("this layer records only with GroupSendRecorded")
	}
	results := make(chan string, 2)
	for _, text := range []string{"first", "second"} {
		msg, err := channellayer.NewMessage("chat.message", map[string]string{"text": text})
		if err != nil {
			log.Fatal(err)
		}
		rec.GroupSendRecordedAsync("room:lobby", msg, func(m channellayer.Message, err error) {
			if err != nil {
				results <- "not recorded: " + err.Error()
				return
			}
			results <- fmt.Sprintf("recorded %s with an ID: %t", text, channellayer.ValidID(m.ID))
		})
	}
	fmt.Println(<-results)
	fmt.Println(<-results)
	// Output:
	// recorded first with an ID: true
	// recorded second with an ID: true
}
