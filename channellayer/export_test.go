package channellayer

// HashSlot exposes hashSlot to the tests: the Redis Cluster hash slot of a
// key, as the layer computes it to give each slot its own publish pipeline.
func HashSlot(key string) int { return int(hashSlot(key)) }
