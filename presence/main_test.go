package presence

import (
	"testing"

	"github.com/chatterpro/chatterpro/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }
