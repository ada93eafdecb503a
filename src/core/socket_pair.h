// A connected TCP socket pair with nothing in it and nothing on its way.
#pragma once

namespace hooker {

// True when neither socket has a byte unacknowledged in its send queue, and
// neither has a byte (or an EOF, or an error) to read. hookerd gives such a
// slot pair to the next connection as it is; any other is closed, so no byte
// of one connection can reach another.
bool pair_is_quiet(int a, int b);

}  // namespace hooker
