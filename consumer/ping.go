package consumer

import "context"

// startPing starts a ping on a tracked goroutine (the pinger's start).
func (c *Conn) startPing() bool { return c.tasks.Go(c.pingPeer) }

// pingPeer checks the peer is alive; one that does not answer in PingTimeout
// is dropped (1006).
func (c *Conn) pingPeer() {
	defer c.ping.Done()
	// Not derived from c.ctx: a closing transport ends the ping anyway,
	// and a child would leave c.ctx holding a map of children.
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.opts.PingTimeout)
	err := c.t.Ping(ctx)
	cancel()
	if err != nil {
		if c.ctx.Err() == nil {
			c.Logger().Info("peer did not answer a ping; closing", "err", err)
		}
		c.closeWith(StatusAbnormal, "", closePeer)
	}
}
