//! SMTP client tests: scripted server replies in, exact client bytes out.

use super::*;

const EHLO_TLS: &str = "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 STARTTLS\r\n";
const EHLO_PLAIN: &str = "250-mx.example.org\r\n250-SIZE 1000\r\n250 8BITMIME\r\n";
const EHLO_PIPELINING: &str =
    "250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE\r\n250 8BITMIME\r\n";

struct T {
    c: Client,
}

impl T {
    fn new() -> T {
        T {
            c: Client::new("relay.test"),
        }
    }

    /// A client past STARTTLS and the second EHLO (answered with `ehlo`).
    fn ready(ehlo: &str) -> T {
        let mut t = T::new();
        t.server("220 mx.example.org ESMTP\r\n");
        assert_eq!(t.sent(), "EHLO relay.test\r\n");
        t.server(EHLO_TLS);
        assert_eq!(t.sent(), "STARTTLS\r\n");
        t.server("220 2.0.0 go ahead\r\n");
        assert_eq!(t.c.poll(), Event::StartTls);
        t.c.tls_established();
        assert_eq!(t.sent(), "EHLO relay.test\r\n");
        assert_eq!(t.c.poll(), Event::Read(Step::Command));
        t.server(ehlo);
        assert_eq!(t.c.poll(), Event::Ready);
        t
    }

    fn server(&mut self, s: &str) {
        self.c.receive(s.as_bytes());
    }

    /// Everything the client wants written now (the whole body, chunk by chunk).
    fn sent(&mut self) -> String {
        let mut all = Vec::new();
        while !self.c.output().is_empty() {
            let n = self.c.output().len();
            all.extend_from_slice(self.c.output());
            self.c.consume_output(n);
        }
        String::from_utf8(all).unwrap()
    }

    fn send(&mut self, from: &str, to: &[&str], body: &str) {
        let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
        self.c.send(from, &to, Bytes::from(body.to_owned()));
    }

    fn done(&mut self) -> Vec<Outcome> {
        match self.c.poll() {
            Event::Done(o) => o,
            other => panic!("expected Done, got {other:?}"),
        }
    }

    fn failed(&mut self) -> ConnError {
        match self.c.poll() {
            Event::Failed(e) => e,
            other => panic!("expected Failed, got {other:?}"),
        }
    }
}

fn perm(code: u16, text: &'static str) -> Outcome {
    Outcome::Permanent(Reply::new(code, text))
}

fn temp(code: u16, text: &'static str) -> Outcome {
    Outcome::Temporary(Reply::new(code, text))
}

#[test]
fn delivers_with_starttls_and_reuses_the_connection() {
    let mut t = T::ready(EHLO_PLAIN);
    assert_eq!(
        t.c.extensions(),
        Extensions {
            starttls: false,
            pipelining: false,
            size: Some(1000),
            eight_bit_mime: true,
            smtputf8: false,
        }
    );
    t.send(
        "a@relay.test",
        &["b@example.org"],
        "Subject: x\r\n\r\nhi\r\n",
    );
    assert_eq!(t.sent(), "MAIL FROM:<a@relay.test> SIZE=18\r\n");
    t.server("250 2.1.0 Ok\r\n");
    assert_eq!(t.sent(), "RCPT TO:<b@example.org>\r\n");
    t.server("250 2.1.5 Ok\r\n");
    assert_eq!(t.sent(), "DATA\r\n");
    t.server("354 End data with <CR><LF>.<CR><LF>\r\n");
    assert_eq!(t.c.poll(), Event::Write(Step::DataBody));
    assert_eq!(t.sent(), "Subject: x\r\n\r\nhi\r\n.\r\n");
    assert_eq!(t.c.poll(), Event::Read(Step::DataDone));
    t.server("250 2.0.0 Ok: queued as 1\r\n");
    assert_eq!(t.done(), [Outcome::Delivered]);
    assert_eq!(t.c.poll(), Event::Ready);
    assert!(t.c.is_ready());
    // A second message on the same connection: no RSET needed after a completed transaction.
    t.send("", &["c@example.org"], "x\r\n");
    assert_eq!(t.sent(), "MAIL FROM:<> SIZE=3\r\n");
    t.server("250 ok\r\n");
    assert_eq!(t.sent(), "RCPT TO:<c@example.org>\r\n");
    t.server("250 ok\r\n");
    assert_eq!(t.sent(), "DATA\r\n");
    t.server("354 go\r\n");
    assert_eq!(t.sent(), "x\r\n.\r\n");
    t.server("250 ok\r\n250 unasked\r\n");
    assert_eq!(t.done(), [Outcome::Delivered]);
    // The second 250 answers nothing we asked: the connection is dead, not the message.
    assert!(matches!(t.failed(), ConnError::Protocol(_)));
}

#[test]
fn only_354_starts_the_body() {
    let mut t = T::ready(EHLO_PLAIN);
    t.send("a@relay.test", &["b@example.org"], "x\r\n");
    t.sent();
    t.server("250 ok\r\n");
    t.sent();
    t.server("250 ok\r\n");
    assert_eq!(t.sent(), "DATA\r\n");
    t.server("250 2.0.0 Ok: queued\r\n");
    assert!(matches!(t.failed(), ConnError::Protocol(e) if e.contains("DATA")));
}

#[test]
fn quit_closes() {
    let mut t = T::ready(EHLO_PLAIN);
    t.c.quit();
    assert_eq!(t.sent(), "QUIT\r\n");
    assert_eq!(t.c.poll(), Event::Read(Step::Command));
    t.server("221 2.0.0 Bye\r\n");
    assert_eq!(t.c.poll(), Event::Closed);
    let mut t = T::ready(EHLO_PLAIN);
    t.c.quit();
    t.sent();
    t.c.receive_eof();
    assert_eq!(t.c.poll(), Event::Closed);
}

#[test]
fn pipelines_mail_and_rcpt_and_keeps_each_recipients_reply() {
    let mut t = T::ready(EHLO_PIPELINING);
    t.send(
        "a@relay.test",
        &["b@example.org", "c@example.org", "d@example.org"],
        "x\r\n",
    );
    assert_eq!(
        t.sent(),
        "MAIL FROM:<a@relay.test> SIZE=3\r\nRCPT TO:<b@example.org>\r\n\
         RCPT TO:<c@example.org>\r\nRCPT TO:<d@example.org>\r\n"
    );
    t.server("250 2.1.0 Ok\r\n550 5.1.1 <b@example.org>: User unknown\r\n250 2.1.5 Ok\r\n");
    assert_eq!(t.sent(), "", "DATA waits for every RCPT reply");
    t.server("452 4.2.2 <d@example.org>: Mailbox full\r\n");
    assert_eq!(t.sent(), "DATA\r\n");
    t.server("354 go\r\n");
    assert_eq!(t.sent(), "x\r\n.\r\n");
    t.server("250 2.0.0 Ok\r\n");
    assert_eq!(
        t.done(),
        [
            perm(550, "5.1.1 <b@example.org>: User unknown"),
            Outcome::Delivered,
            temp(452, "4.2.2 <d@example.org>: Mailbox full"),
        ]
    );
    assert_eq!(t.c.poll(), Event::Ready);
}

#[test]
fn no_data_without_an_accepted_recipient_and_rset_before_reuse() {
    let mut t = T::ready(EHLO_PLAIN);
    t.send("a@relay.test", &["b@example.org"], "x\r\n");
    t.sent();
    t.server("250 ok\r\n");
    t.sent();
    t.server("550 5.1.1 no such user\r\n");
    assert_eq!(t.sent(), "RSET\r\n");
    assert_eq!(t.c.poll(), Event::Read(Step::Command));
    t.server("250 2.0.0 Ok\r\n");
    assert_eq!(t.done(), [perm(550, "5.1.1 no such user")]);
    assert_eq!(t.c.poll(), Event::Ready);
}

#[test]
fn a_refused_mail_from_answers_every_recipient() {
    // Pipelined: the RCPT replies that follow are read and ignored.
    let mut t = T::ready(EHLO_PIPELINING);
    t.send("a@relay.test", &["b@example.org", "c@example.org"], "x\r\n");
    t.sent();
    t.server("451 4.3.0 try later\r\n503 5.5.1 need MAIL\r\n");
    assert_eq!(t.sent(), "");
    t.server("503 5.5.1 need MAIL\r\n");
    assert_eq!(t.sent(), "RSET\r\n");
    t.server("250 ok\r\n");
    assert_eq!(
        t.done(),
        [temp(451, "4.3.0 try later"), temp(451, "4.3.0 try later")]
    );
    // Not pipelined: no RCPT at all.
    let mut t = T::ready(EHLO_PLAIN);
    t.send("a@relay.test", &["b@example.org"], "x\r\n");
    t.sent();
    t.server("553 5.7.1 sender rejected\r\n");
    assert_eq!(t.sent(), "RSET\r\n");
    t.server("250 ok\r\n");
    assert_eq!(t.done(), [perm(553, "5.7.1 sender rejected")]);
}

#[test]
fn data_and_final_replies_answer_the_accepted_recipients_only() {
    let mut t = T::ready(EHLO_PIPELINING);
    t.send("a@relay.test", &["b@example.org", "c@example.org"], "x\r\n");
    t.sent();
    t.server("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n");
    assert_eq!(t.sent(), "DATA\r\n");
    t.server("554 5.7.1 go away\r\n");
    assert_eq!(t.sent(), "RSET\r\n");
    t.server("250 ok\r\n");
    assert_eq!(
        t.done(),
        [perm(554, "5.7.1 go away"), perm(550, "5.1.1 unknown")]
    );
    // The final reply after the body.
    t.send("a@relay.test", &["b@example.org"], "x\r\n");
    t.sent();
    t.server("250 ok\r\n250 ok\r\n");
    t.sent();
    t.server("354 go\r\n");
    t.sent();
    t.server("451 4.7.1 greylisted\r\n");
    assert_eq!(t.done(), [temp(451, "4.7.1 greylisted")]);
    assert_eq!(t.c.poll(), Event::Ready);
}

#[test]
fn a_huge_reply_is_cut_before_it_is_copied_to_every_recipient() {
    // Found by the smtp_client fuzz target: a DATA refusal of 64 lines of 4 KiB was kept whole
    // in each pending recipient's outcome (16 recipients: 4.6 MB held).
    let mut t = T::ready(EHLO_PIPELINING);
    let rcpts: Vec<String> = (0..16).map(|i| format!("r{i}@example.org")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    t.send("a@relay.test", &rcpts, "x\r\n");
    t.sent();
    t.server(&"250 ok\r\n".repeat(17));
    assert_eq!(t.sent(), "DATA\r\n");
    let line = format!("5.7.1 {}é", "x".repeat(MAX_REPLY_LINE - 16));
    let mut reply = format!("554-{line}\r\n").repeat(MAX_REPLY_LINES - 1);
    reply.push_str("554 end\r\n");
    t.server(&reply);
    assert_eq!(t.sent(), "RSET\r\n");
    t.server("250 ok\r\n");
    let outcomes = t.done();
    assert_eq!(outcomes.len(), 16);
    for o in &outcomes {
        let Outcome::Permanent(r) = o else {
            panic!("{o:?}");
        };
        assert_eq!(r.code, 554);
        let text: usize = r.lines.iter().map(|l| l.len()).sum();
        assert_eq!(text, MAX_OUTCOME_TEXT);
        assert!(r.lines[0].starts_with("5.7.1 xxx"), "{:?}", r.lines[0]);
        assert_eq!(
            crate::outbound::enhanced_status(r).as_deref(),
            Some("5.7.1")
        );
    }
    // A short reply is kept as it was.
    t.send("a@relay.test", &["b@example.org"], "x\r\n");
    t.sent();
    t.server("550-5.1.1 no\r\n550 such user\r\n");
    t.server("250 ok\r\n");
    assert_eq!(t.sent(), "RSET\r\n");
    t.server("250 ok\r\n");
    let Outcome::Permanent(r) = &t.done()[0] else {
        panic!("not permanent");
    };
    assert_eq!(r.lines, ["5.1.1 no", "such user"]);
}

#[test]
fn a_final_reply_before_the_body_is_written_fails_the_connection() {
    // Found by the smtp_client fuzz target: a server sending `354` and `250` in one read made
    // the client take the 250 as the answer to a body it had not written yet (it fits in one
    // chunk), report the message delivered and then write the body as if it were the next
    // commands.
    let mut t = T::ready(EHLO_PIPELINING);
    t.send(
        "a@relay.test",
        &["b@example.org"],
        "RSET\r\nMAIL FROM:<x@y>\r\n",
    );
    t.sent();
    t.server("250 ok\r\n250 ok\r\n");
    assert_eq!(t.sent(), "DATA\r\n");
    t.server("354 go\r\n250 2.0.0 queued\r\n");
    let ConnError::Protocol(e) = t.failed() else {
        panic!("not a protocol error");
    };
    assert!(e.contains("before the end of the message"), "{e}");
    assert!(t.c.output().is_empty(), "nothing more is written");
    // The 354 alone, then the final reply once the body is out: delivered.
    let mut t = T::ready(EHLO_PIPELINING);
    t.send("a@relay.test", &["b@example.org"], "x\r\n");
    t.sent();
    t.server("250 ok\r\n250 ok\r\n");
    assert_eq!(t.sent(), "DATA\r\n");
    t.server("354 go\r\n");
    assert_eq!(t.sent(), "x\r\n.\r\n");
    t.server("250 2.0.0 queued\r\n");
    assert_eq!(t.done(), [Outcome::Delivered]);
}

#[test]
fn a_421_answers_the_transaction_and_closes() {
    let mut t = T::ready(EHLO_PIPELINING);
    t.send("a@relay.test", &["b@example.org", "c@example.org"], "x\r\n");
    t.sent();
    t.server("250 ok\r\n421 4.4.2 shutting down\r\n");
    assert_eq!(
        t.done(),
        [
            temp(421, "4.4.2 shutting down"),
            temp(421, "4.4.2 shutting down")
        ]
    );
    assert_eq!(t.c.poll(), Event::Closed);
    assert_eq!(t.sent(), "");
}

#[test]
fn starttls_is_required() {
    let mut t = T::new();
    t.server("220 mx ESMTP\r\n");
    t.sent();
    t.server(EHLO_PLAIN);
    assert_eq!(t.failed(), ConnError::Tls("STARTTLS not offered".into()));
    assert_eq!(t.sent(), "", "no MAIL in cleartext");
    let mut t = T::new();
    t.server("220 mx ESMTP\r\n");
    t.sent();
    t.server(EHLO_TLS);
    t.sent();
    t.server("454 4.7.0 TLS not available\r\n");
    assert!(matches!(t.failed(), ConnError::Tls(e) if e.contains("454 4.7.0")));
}

#[test]
fn bytes_after_the_starttls_reply_are_dropped() {
    let mut t = T::new();
    t.server("220 mx ESMTP\r\n");
    t.sent();
    t.server(EHLO_TLS);
    t.sent();
    // An injected reply rides along with the 220: it must not answer the EHLO after TLS.
    t.server("220 go\r\n250 injected\r\n");
    assert_eq!(t.c.poll(), Event::StartTls);
    t.c.tls_established();
    assert_eq!(t.sent(), "EHLO relay.test\r\n");
    assert_eq!(t.c.poll(), Event::Read(Step::Command));
    t.server(EHLO_PLAIN);
    assert_eq!(t.c.poll(), Event::Ready);
}

#[test]
fn refused_greeting_and_ehlo_are_connection_failures() {
    let mut t = T::new();
    assert_eq!(t.c.poll(), Event::Read(Step::Greeting));
    t.server("554 5.3.2 no service\r\n");
    assert_eq!(
        t.failed(),
        ConnError::Refused(Reply::new(554, "5.3.2 no service"))
    );
    let mut t = T::new();
    t.server("220-mx\r\n220 ESMTP\r\n");
    t.sent();
    t.server("500 what\r\n");
    assert!(matches!(t.failed(), ConnError::Refused(r) if r.code == 500));
}

#[test]
fn garbage_and_oversized_replies_fail_the_connection() {
    for junk in [
        "HTTP/1.1 400 Bad Request\r\n",
        "220\x00mx\r\n",
        "22\r\n",
        "620 nope\r\n",
        "220-a\r\n221 b\r\n",
    ] {
        let mut t = T::new();
        t.server(junk);
        assert!(matches!(t.failed(), ConnError::Protocol(_)), "{junk:?}");
    }
    // A line that never ends: refused once it passes the cap, not buffered on.
    let mut t = T::new();
    t.server(&format!("220 {}", "x".repeat(MAX_REPLY_LINE)));
    assert!(matches!(t.failed(), ConnError::Protocol(e) if e.contains("too long")));
    // A reply that never ends.
    let mut t = T::new();
    t.server(&"220-x\r\n".repeat(MAX_REPLY_LINES + 1));
    assert!(matches!(t.failed(), ConnError::Protocol(e) if e.contains("too many lines")));
    // Once failed, more input changes nothing.
    t.server("220 fine\r\n");
    assert!(matches!(t.c.poll(), Event::Failed(_)));
    assert_eq!(t.sent(), "");
}

#[test]
fn early_close_is_an_io_error() {
    let mut t = T::ready(EHLO_PLAIN);
    t.send("a@relay.test", &["b@example.org"], "x\r\n");
    t.sent();
    t.c.receive_eof();
    assert!(matches!(t.failed(), ConnError::Io(_)));
}

#[test]
fn replies_split_at_any_byte_give_the_same_result() {
    let script = [
        "220-mx.example.org ESMTP\r\n220 ready\r\n",
        EHLO_TLS,
        "220 go\r\n",
        EHLO_PIPELINING,
        "250 ok\r\n250 ok\r\n",
        "354 go\r\n",
        "250 2.0.0 queued\r\n",
    ];
    for split in [1, 2, 3, 7] {
        let mut t = T::new();
        let mut sent = String::new();
        for (i, part) in script.iter().enumerate() {
            for chunk in part.as_bytes().chunks(split) {
                t.c.receive(chunk);
            }
            sent.push_str(&t.sent());
            match i {
                2 => {
                    assert_eq!(t.c.poll(), Event::StartTls);
                    t.c.tls_established();
                    sent.push_str(&t.sent());
                }
                3 => {
                    assert_eq!(t.c.poll(), Event::Ready);
                    t.send("a@b", &["c@d"], "hello\n.\n");
                    sent.push_str(&t.sent());
                }
                _ => {}
            }
        }
        assert_eq!(t.done(), [Outcome::Delivered], "split {split}");
        assert_eq!(
            sent,
            "EHLO relay.test\r\nSTARTTLS\r\nEHLO relay.test\r\nMAIL FROM:<a@b> SIZE=8\r\n\
             RCPT TO:<c@d>\r\nDATA\r\nhello\r\n..\r\n.\r\n"
        );
    }
}

#[test]
fn size_limit_and_smtputf8_fail_before_sending() {
    let mut t = T::ready(EHLO_PLAIN);
    t.send("a@relay.test", &["b@example.org"], &"x".repeat(1001));
    assert_eq!(t.sent(), "");
    let o = t.done();
    assert!(
        matches!(&o[..], [Outcome::Permanent(r)] if r.code == 552),
        "{o:?}"
    );
    assert_eq!(t.c.poll(), Event::Ready);
    t.send("a@relay.test", &["bö@example.org"], "x\r\n");
    let o = t.done();
    assert!(
        matches!(&o[..], [Outcome::Permanent(r)] if r.code == 553),
        "{o:?}"
    );
    let mut t = T::ready("250-mx\r\n250-SMTPUTF8\r\n250 8BITMIME\r\n");
    t.send("a@relay.test", &["bö@example.org"], "Subject: é\r\n\r\n");
    assert_eq!(
        t.sent(),
        "MAIL FROM:<a@relay.test> BODY=8BITMIME SMTPUTF8\r\n"
    );
}

#[test]
fn body_is_dot_stuffed_with_crlf_line_ends() {
    let encode = |body: &[u8]| {
        let mut enc = BodyEncoder::new(Bytes::copy_from_slice(body));
        let mut out = Vec::new();
        while enc.encode_chunk(&mut out) {}
        String::from_utf8(out).unwrap()
    };
    assert_eq!(encode(b""), ".\r\n");
    assert_eq!(encode(b"a"), "a\r\n.\r\n");
    assert_eq!(encode(b"a\r\n"), "a\r\n.\r\n");
    assert_eq!(encode(b".\r\n"), "..\r\n.\r\n");
    assert_eq!(
        encode(b"a\n.b\r\n..c\rd\r"),
        "a\r\n..b\r\n...c\r\nd\r\n.\r\n"
    );
    assert_eq!(encode(b"x.\r\n.\n\n."), "x.\r\n..\r\n\r\n..\r\n.\r\n");
    // Line ends and dots across chunk boundaries.
    let mut big = vec![b'x'; BODY_CHUNK - 1];
    big.extend_from_slice(b"\r\n.y\r");
    big.extend(vec![b'z'; BODY_CHUNK]);
    let out = encode(&big);
    assert!(out.ends_with(&format!("x\r\n..y\r\n{}\r\n.\r\n", "z".repeat(BODY_CHUNK))));
}

#[test]
fn a_large_body_is_sent_in_bounded_chunks() {
    let mut t = T::ready("250-mx\r\n250 SIZE 0\r\n");
    let body = "line of text\r\n".repeat(100_000);
    t.send("a@b", &["c@d"], &body);
    t.sent();
    t.server("250 ok\r\n");
    t.sent();
    t.server("250 ok\r\n");
    t.sent();
    t.server("354 go\r\n");
    let mut total = 0;
    let mut max = 0;
    while !t.c.output().is_empty() {
        assert_eq!(t.c.poll(), Event::Write(Step::DataBody));
        let n = t.c.output().len();
        max = max.max(n);
        total += n;
        t.c.consume_output(n);
    }
    assert_eq!(total, body.len() + 3);
    assert!(max <= 2 * BODY_CHUNK + 16, "{max}");
    assert_eq!(t.c.poll(), Event::Read(Step::DataDone));
    t.server("250 ok\r\n");
    assert_eq!(t.done(), [Outcome::Delivered]);
}

#[test]
fn send_when_not_ready_fails_the_connection() {
    let mut t = T::new();
    t.send("a@b", &["c@d"], "x");
    assert!(matches!(t.failed(), ConnError::Protocol(_)));
}
