use super::*;

/// The message, 7-bit, fed in blocks of `size` octets.
fn in_blocks(message: &[u8], size: usize) -> Result<Vec<u8>, Unconvertible> {
    let mut scan = Scan::new();
    for block in message.chunks(size) {
        scan.feed(block)?;
    }
    let plan = scan.finish()?;
    let mut convert = Convert::new(&plan);
    let mut out = Vec::new();
    for block in message.chunks(size) {
        convert.feed(Some(block), &mut out).unwrap();
    }
    convert.feed(None, &mut out).unwrap();
    Ok(out)
}

/// The message, 7-bit: the same whatever the blocks it streams in.
fn to_seven_bit(message: &[u8]) -> Result<Vec<u8>, Unconvertible> {
    let whole = in_blocks(message, message.len().max(1));
    for size in [1, 2, 3, 7, 64] {
        assert_eq!(in_blocks(message, size), whole, "in blocks of {size}");
    }
    whole
}

#[test]
fn a_single_part_body_becomes_quoted_printable() {
    let msg = "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße = hi \r\n.dot\r\n";
    let out = String::from_utf8(to_seven_bit(msg.as_bytes()).unwrap()).unwrap();
    assert_eq!(
        out,
        "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe =3D hi=20\r\n.dot\r\n"
    );
    assert!(!has_8bit(out.as_bytes()));
}

#[test]
fn long_lines_get_soft_breaks() {
    let body = "é".repeat(60);
    let out = to_seven_bit(format!("A: b\r\n\r\n{body}").as_bytes()).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.lines().all(|l| l.len() <= 76), "{text}");
    assert!(text.contains("=\r\n"));
}

#[test]
fn multipart_parts_are_converted_one_by_one() {
    let msg = "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npre\r\n--b1\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nnaïve\r\n--b1--\r\n";
    let out = String::from_utf8(to_seven_bit(msg.as_bytes()).unwrap()).unwrap();
    assert_eq!(
        out,
        "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npre\r\n--b1\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nna=C3=AFve\r\n--b1--\r\n"
    );
}

#[test]
fn a_part_without_a_header() {
    let msg = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nnaïve\r\n--b--\r\n";
    let out = String::from_utf8(to_seven_bit(msg.as_bytes()).unwrap()).unwrap();
    assert_eq!(
        out,
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nna=C3=AFve\r\n--b--\r\n"
    );
}

#[test]
fn deep_nesting_is_refused_not_followed() {
    let mut msg = String::from("ü");
    for i in 0..1000 {
        msg = format!(
            "Content-Type: multipart/mixed; boundary=x{i}\r\n\r\n--x{i}\r\n{msg}\r\n--x{i}--\r\n"
        );
    }
    assert_eq!(to_seven_bit(msg.as_bytes()), Err(Unconvertible::TooDeep));
}

#[test]
fn what_cannot_be_converted_is_refused() {
    assert_eq!(
        to_seven_bit("Subject: Grüße\r\n\r\nx".as_bytes()),
        Err(Unconvertible::EightBitHeader)
    );
    let partial = "Content-Type: message/partial; id=x; number=1\r\n\r\nSubject: a\r\n\r\nü\r\n";
    assert_eq!(
        to_seven_bit(partial.as_bytes()),
        Err(Unconvertible::EightBitMessagePart)
    );
    let attached = "Content-Type: message/rfc822\r\n\r\nSubject: Grüße\r\n\r\nx\r\n";
    assert_eq!(
        to_seven_bit(attached.as_bytes()),
        Err(Unconvertible::EightBitHeader)
    );
    assert_eq!(
        to_seven_bit(
            "Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\nü\r\n".as_bytes()
        ),
        Err(Unconvertible::BadMultipart)
    );
}

#[test]
fn a_line_longer_than_the_line_limit_streams_in_pieces() {
    let line = format!("{}é \r\n", "a".repeat(200_000));
    let out = to_seven_bit(format!("A: b\r\n\r\n{line}").as_bytes()).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.lines().all(|l| l.len() <= 76));
    assert!(
        text.ends_with("=C3=A9=20\r\n"),
        "{}",
        &text[text.len() - 40..]
    );
}

#[tokio::test]
async fn the_size_sent_is_the_size_measured() {
    let msg = "Content-Type: multipart/mixed; boundary=b\r\n\r\npré\r\n--b\r\n\r\nnaïve\r\n--b--\r\népilogue\r\n";
    let content = Content::from(msg.as_bytes().to_vec());
    let out = Outbound::for_hop(&content, false).await.unwrap().unwrap();
    let mut sent = Vec::new();
    let mut blocks = out.blocks();
    while let Some(b) = blocks.next().await.unwrap() {
        sent.extend_from_slice(&b);
    }
    assert_eq!(sent, to_seven_bit(msg.as_bytes()).unwrap());
    assert_eq!(out.len(), sent.len() as u64);
    assert!(!has_8bit(&sent));
    assert!(matches!(
        Outbound::for_hop(&content, true).await.unwrap(),
        Ok(Outbound::Spooled(_))
    ));
}

#[test]
fn a_soft_break_never_starts_a_delimiter_line() {
    for lead in ["a".repeat(75), "é".repeat(25)] {
        let msg = format!(
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nü\r\n{lead}--b\r\n--b--\r\n"
        );
        let out = String::from_utf8(to_seven_bit(msg.as_bytes()).unwrap()).unwrap();
        let delimiters: Vec<&str> = out.lines().filter(|l| l.starts_with("--b")).collect();
        assert_eq!(delimiters, ["--b", "--b--"], "{out}");
        assert!(out.contains("=\r\n=2D-b"), "{out}");
    }
}

#[test]
fn an_encoded_part_with_8bit_octets_is_refused_not_encoded_twice() {
    for cte in ["quoted-printable", "Base64"] {
        let msg = format!("Content-Transfer-Encoding: {cte}\r\n\r\nna=C3=AFve ü\r\n");
        assert_eq!(
            to_seven_bit(msg.as_bytes()),
            Err(Unconvertible::EightBitEncodedPart)
        );
    }
}

#[test]
fn a_converted_multipart_is_labelled_7bit_and_quoted_boundaries_are_whole() {
    let msg = "Content-Type: multipart/mixed; boundary=\"a;b\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n--a;b\r\n\r\nü\r\n--a;b--\r\n";
    let out = String::from_utf8(to_seven_bit(msg.as_bytes()).unwrap()).unwrap();
    assert_eq!(
        out,
        "Content-Type: multipart/mixed; boundary=\"a;b\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n--a;b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BC\r\n--a;b--\r\n"
    );
}

#[test]
fn an_attached_message_is_converted_inside() {
    // A report returning an 8-bit message, as bounce.rs writes one.
    let msg = "Content-Type: multipart/report; boundary=r\r\n\r\n--r\r\nContent-Type: text/plain\r\n\r\nreport\r\n--r\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSubject: a\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\n\r\nnaïve\r\n--i--\r\n\r\n--r--\r\n";
    let out = String::from_utf8(to_seven_bit(msg.as_bytes()).unwrap()).unwrap();
    assert_eq!(
        out,
        "Content-Type: multipart/report; boundary=r\r\n\r\n--r\r\nContent-Type: text/plain\r\n\r\nreport\r\n--r\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\nSubject: a\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n--i\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nna=C3=AFve\r\n--i--\r\n\r\n--r--\r\n"
    );
}
