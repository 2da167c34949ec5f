package consumertest

import (
	"context"
	"errors"
	"sync"

	"github.com/coder/websocket"

	"github.com/chatterpro/chatterpro/consumer"
)

type frame struct {
	typ  websocket.MessageType
	data []byte
}

// pipe connects the simulated client and the server end of a connection.
type pipe struct {
	c2s chan frame
	s2c chan []byte

	mu         sync.Mutex
	clientDone chan struct{} // the client closed
	clientCode consumer.StatusCode
	serverDone chan struct{} // the server closed
	serverCode consumer.StatusCode
	serverOnce sync.Once
	clientOnce sync.Once
	stalled    chan struct{}
	stallOnce  sync.Once
}

func newPipe(buffer int) *pipe {
	return &pipe{
		c2s:        make(chan frame, 64),
		s2c:        make(chan []byte, buffer),
		clientDone: make(chan struct{}),
		serverDone: make(chan struct{}),
		stalled:    make(chan struct{}),
	}
}

var errClosed = errors.New("consumertest: connection closed")

func (p *pipe) clientSend(ctx context.Context, f frame) error {
	select {
	case <-p.serverDone:
		return errClosed
	case <-p.clientDone:
		return errClosed
	default:
	}
	select {
	case p.c2s <- f:
		return nil
	case <-p.serverDone:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pipe) clientReceive(ctx context.Context) ([]byte, error) {
	select {
	case b := <-p.s2c:
		return b, nil
	default:
	}
	select {
	case b := <-p.s2c:
		return b, nil
	case <-p.serverDone:
		select {
		case b := <-p.s2c:
			return b, nil
		default:
		}
		return nil, websocket.CloseError{Code: p.serverCode}
	case <-p.clientDone:
		return nil, errClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pipe) clientClose(code consumer.StatusCode) {
	p.clientOnce.Do(func() {
		p.clientCode = code
		close(p.clientDone)
	})
}

func (p *pipe) stall() { p.stallOnce.Do(func() { close(p.stalled) }) }

func (p *pipe) server() consumer.Transport { return serverEnd{p} }

// serverEnd is the consumer.Transport the framework sees.
type serverEnd struct{ p *pipe }

func (s serverEnd) Read(ctx context.Context) (websocket.MessageType, []byte, error) {
	p := s.p
	select {
	case f := <-p.c2s:
		return f.typ, f.data, nil
	case <-p.clientDone:
		return 0, nil, websocket.CloseError{Code: p.clientCode}
	case <-p.serverDone:
		return 0, nil, websocket.CloseError{Code: p.serverCode}
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
}

func (s serverEnd) Write(ctx context.Context, text []byte) error {
	p := s.p
	select {
	case <-p.serverDone:
		return errClosed
	case <-p.clientDone:
		return errClosed
	default:
	}
	select {
	case p.s2c <- text:
		return nil
	case <-p.serverDone:
		return errClosed
	case <-p.clientDone:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s serverEnd) Ping(ctx context.Context) error {
	select {
	case <-s.p.stalled:
		<-ctx.Done()
		return ctx.Err()
	case <-s.p.serverDone:
		return errClosed
	default:
		return nil
	}
}

func (s serverEnd) Close(code consumer.StatusCode, reason string) error {
	s.p.serverOnce.Do(func() {
		s.p.serverCode = code
		close(s.p.serverDone)
	})
	return nil
}

func (s serverEnd) CloseNow() error { return s.Close(consumer.StatusAbnormal, "") }
