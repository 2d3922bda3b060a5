//! agent's exit statuses, the one table. Only `commands` chooses one; `main` maps an error
//! to [`ERROR`].

/// Everything asked was done.
pub const OK: u8 = 0;
/// Bad input, or a refusal before the work (printed by `main` as one line).
pub const ERROR: u8 = 1;
/// The command failed on some host, a bench got wrong answers, or the data was incomplete.
pub const FAILED: u8 = 2;
/// Some host was unreachable (wins over [`FAILED`]).
pub const UNREACHABLE: u8 = 3;
/// Ctrl-C, as shells report SIGINT.
pub const INTERRUPTED: u8 = 130;

/// How many hosts ended each way. A host that never finished counts as interrupted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub ok: usize,
    pub failed: usize,
    pub unreachable: usize,
    pub interrupted: usize,
}

/// The exit status of a run over hosts.
pub fn of_hosts(t: &Tally, interrupted: bool) -> u8 {
    if interrupted || t.interrupted > 0 {
        INTERRUPTED
    } else if t.unreachable > 0 {
        UNREACHABLE
    } else if t.failed > 0 {
        FAILED
    } else {
        OK
    }
}
