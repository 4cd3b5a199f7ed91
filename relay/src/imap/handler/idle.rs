//! IDLE (RFC 2177): enter, the keep-alive, and `DONE`. While idling, store changes are reported
//! as they happen (`account_changed` → `super::super::sync`).

use super::super::session::{Idle, Session, State};

/// `* OK Still here` interval in IDLE.
const IDLE_PING_MS: u64 = 120_000;

impl Session {
    /// `IDLE`: report what changed so far, then wait for `DONE`.
    pub(in super::super) fn idle(&mut self, tag: String) {
        self.line("+ idling");
        let idle = Idle {
            tag,
            ping_at: self.now + IDLE_PING_MS,
            _counted: self.shared.metrics.idle(),
        };
        self.state = match std::mem::replace(&mut self.state, State::Logout) {
            State::Authenticated(a) => State::Idle(a, None, idle),
            State::Selected(a, s) => State::Idle(a, Some(s), idle),
            other => other,
        };
        self.sync(true);
    }

    /// A line while idling: `DONE` ends IDLE; anything else ends it with `BAD`.
    pub(in super::super) fn idle_line(&mut self, line: &[u8]) {
        let idle = match std::mem::replace(&mut self.state, State::Logout) {
            State::Idle(auth, selected, idle) => {
                self.state = match selected {
                    Some(s) => State::Selected(auth, s),
                    None => State::Authenticated(auth),
                };
                idle
            }
            other => {
                self.state = other;
                return;
            }
        };
        if line.eq_ignore_ascii_case(b"DONE") {
            self.sync(true);
            self.tagged(&idle.tag, "OK Idle completed");
        } else {
            self.tagged(&idle.tag, "BAD Expected DONE");
        }
    }

    /// The keep-alive is due.
    pub(in super::super) fn idle_ping(&mut self, now_ms: u64) {
        self.line("* OK Still here");
        if let State::Idle(_, _, idle) = &mut self.state {
            idle.ping_at = now_ms + IDLE_PING_MS;
        }
    }
}
