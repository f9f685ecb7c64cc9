//! Config parsing and validation tests.

use super::*;

#[test]
fn embedded_default_is_valid() {
    let c = Config::parse("embedded", EMBEDDED_DEFAULT).unwrap();
    assert_eq!(c.listen[0].address.to_string(), "127.0.0.1:2525");
    assert!(c.accepts_domain("LOCALHOST"));
    assert!(matches!(c.route_for("localhost").to, Target::Maildir(_)));
}

#[test]
fn users_send_as_themselves() {
    let c = Config::parse(
        "t",
        r#"
[[listen]]
address = "127.0.0.1:0"
[accept]
domains = ["example.test"]
[[user]]
name = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$cGFzc3dvcmRoYXNoaGFzaGhhc2g"
[[user]]
name = "bob@example.test"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$cGFzc3dvcmRoYXNoaGFzaGhhc2g"
[[user]]
name = "sales"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$cGFzc3dvcmRoYXNoaGFzaGhhc2g"
addresses = ["boss@example.test", "@sales.example.test"]
"#,
    )
    .unwrap();
    let m = |s: &str| crate::proto::address::parse_mailbox(s).unwrap();
    assert!(c.user_owns("alice", &m("Alice@Example.test")));
    assert!(!c.user_owns("alice", &m("ceo@example.test")));
    assert!(!c.user_owns("alice", &m("alice@elsewhere.test")));
    assert!(c.user_owns("bob@example.test", &m("bob@example.test")));
    assert!(!c.user_owns("bob@example.test", &m("bob@other.test")));
    assert!(c.user_owns("sales", &m("boss@example.test")));
    assert!(c.user_owns("sales", &m("anyone@sales.example.test")));
    assert!(!c.user_owns("sales", &m("sales@example.test")));
    assert!(!c.user_owns("nobody", &m("nobody@example.test")));
}

#[test]
fn unknown_keys_and_every_problem() {
    let e = Config::parse("t", "hostname = \"a\"\nbogus = 1\n").unwrap_err();
    assert!(e.problems[0].contains("bogus"), "{e}");
    let e = Config::parse(
        "t",
        r#"
hostname = "bad host"
[limits]
recipients = 0
[accept]
domains = ["ok.test", "not a domain"]
[[user]]
name = "a"
password_hash = "plain"
"#,
    )
    .unwrap_err();
    let all = e.problems.join("\n");
    for key in [
        "hostname",
        "listen",
        "limits.recipients",
        "accept.domains[1]",
        "user[0].password_hash",
    ] {
        assert!(all.contains(key), "{key} missing from {all}");
    }
}

#[test]
fn dnssec_false_is_taken_and_true_is_refused_until_dane_exists() {
    let base = "hostname = \"mx.test\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n";
    assert!(Config::parse("t", &format!("{base}[dns]\ndnssec = false\n")).is_ok());
    for extra in ["dnssec = true", "trust_anchor = \"root.key\""] {
        let e = Config::parse("t", &format!("{base}[dns]\n{extra}\n")).unwrap_err();
        assert!(
            e.problems.join("\n").contains("not available"),
            "{extra}: {e}"
        );
    }
}
