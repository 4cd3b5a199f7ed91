//! Fuzz the SMTP command parser on one line: no panic, everything returned comes from the line
//! and respects the RFC 5321 limits, and the verb is case-insensitive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::smtp::command::{parse_command, Command, MAX_DOMAIN_LEN, MAX_PATH_LEN};

/// `part` is a sub-slice of `line`.
fn within(line: &[u8], part: &str) -> bool {
    let l = line.as_ptr_range();
    let p = part.as_bytes().as_ptr_range();
    l.start <= p.start && p.end <= l.end
}

fn contains(line: &[u8], s: &str) -> bool {
    s.is_empty() || line.windows(s.len()).any(|w| w == s.as_bytes())
}

fn check(line: &[u8], cmd: &Command<'_>) {
    match cmd {
        Command::Ehlo(host) | Command::Helo(host) => {
            assert!(within(line, host));
            assert!(!host.is_empty() && host.len() <= MAX_DOMAIN_LEN && !host.contains(' '));
        }
        Command::Mail { from, .. } => {
            assert!(from.len() <= MAX_PATH_LEN && contains(line, from));
            assert!(from.is_empty() || from.contains('@'));
        }
        Command::Rcpt { to } => {
            assert!(!to.is_empty() && to.len() <= MAX_PATH_LEN && contains(line, to));
            assert!(to.contains('@'));
        }
        Command::Auth { mechanism, initial } => {
            assert!(!mechanism.is_empty());
            assert_eq!(*mechanism, mechanism.to_ascii_uppercase());
            if let Some(i) = initial {
                assert!(within(line, i) && !i.is_empty());
            }
        }
        _ => {}
    }
}

fuzz_target!(|line: &[u8]| {
    let parsed = parse_command(line);
    if let Ok(cmd) = &parsed {
        check(line, cmd);
    }
    // The verb is case-insensitive: upper- and lowercasing it changes nothing.
    let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    for upper in [true, false] {
        let mut other = line.to_vec();
        if upper {
            other[..verb_end].make_ascii_uppercase();
        } else {
            other[..verb_end].make_ascii_lowercase();
        }
        assert_eq!(
            parse_command(&other),
            parsed,
            "verb case changed the result"
        );
    }
});
