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
