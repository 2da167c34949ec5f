package channellayer

var (
	_ Notifier = (*Memory)(nil)
	_ Notifier = (*Redis)(nil)
	_ Drainer  = (*Memory)(nil)
	_ Drainer  = (*Redis)(nil)

	_ ChannelCapacity = (*Memory)(nil)
	_ ChannelCapacity = (*Redis)(nil)
)

// Notify implements Notifier.
func (m *Memory) Notify(channel string, f func(waiting int)) error {
	return m.local.setNotify(channel, f)
}

// TryReceive implements Notifier.
func (m *Memory) TryReceive(channel string) (Message, bool, error) {
	return m.local.tryReceive(channel)
}

// Notify implements Notifier.
func (r *Redis) Notify(channel string, f func(waiting int)) error {
	return r.local.setNotify(channel, f)
}

// TryReceive implements Notifier.
func (r *Redis) TryReceive(channel string) (Message, bool, error) {
	return r.local.tryReceive(channel)
}

// TryReceiveAll implements Drainer.
func (m *Memory) TryReceiveAll(channel string, buf []Message) ([]Message, error) {
	return m.local.tryReceiveAll(channel, buf)
}

// TryReceiveAll implements Drainer.
func (r *Redis) TryReceiveAll(channel string, buf []Message) ([]Message, error) {
	return r.local.tryReceiveAll(channel, buf)
}
