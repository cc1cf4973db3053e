//! Exit codes (docs/punchd.md, "Exit codes").

pub const EXIT_OK: i32 = 0;
/// Runtime error: resolution, binding, sockets, the control socket, key and secret files.
pub const EXIT_RUNTIME: i32 = 1;
/// `--once`: the server did not answer.
pub const EXIT_NO_ANSWER: i32 = 2;
/// `--once`: the server answered without a usable public endpoint.
pub const EXIT_REFUSED: i32 = 3;
/// Usage error: a bad flag, value or config file (clap's own code 2 would read as "no answer" to a script).
pub const EXIT_USAGE: i32 = 4;
