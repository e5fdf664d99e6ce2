use super::*;

#[test]
fn sequence_is_kept_raw_string_or_number() {
    let f = Inbound::parse(r#"{"action":"update","sequence":"0017","params":{"switch":"on"}}"#).unwrap();
    assert_eq!(f.sequence.unwrap().get(), r#""0017""#);
    assert_eq!(&*sequence_key(f.sequence.unwrap()), "0017");
    let f = Inbound::parse(r#"{"action":"update","sequence":1585297259553}"#).unwrap();
    assert_eq!(f.sequence.unwrap().get(), "1585297259553");
    assert_eq!(&*sequence_key(f.sequence.unwrap()), "1585297259553");
}

#[test]
fn wrong_types_and_garbage_are_rejected() {
    assert!(matches!(Inbound::parse("not json"), Err(FrameError::Malformed(_))));
    assert!(matches!(Inbound::parse(r#"{"deviceid":5}"#), Err(FrameError::Malformed(_))));
    assert!(matches!(Inbound::parse(r#"[1,2]"#), Err(FrameError::Malformed(_))));
    assert_eq!(Inbound::parse(r#"{"sequence":{"a":1}}"#).unwrap_err(), FrameError::WrongType("sequence"));
    let f = Inbound::parse(r#"{"action":"update","params":[1]}"#).unwrap();
    assert_eq!(f.object_params().unwrap_err(), FrameError::WrongType("params"));
}

/// Found by fuzzing (`fuzz/`, target `frame`): a sequence with a lone surrogate escape was echoed
/// in the answer, which JSON parsers such as serde_json refuse to read.
#[test]
fn sequences_clients_could_not_read_back_are_refused() {
    for (frame, field) in [
        (r#"{"action":"qpdate","sequence":"1\ud800505"}"#, "sequence"),
        (r#"{"action":"update","sequence":"\udc00"}"#, "sequence"),
        (r#"{"action":"update","sequence":1e400}"#, "sequence"),
        (r#"{"action":"update","sequence":"1","d_seq":"\ud800"}"#, "d_seq"),
        (r#"{"action":"update","sequence":"1","d_seq":[1e999]}"#, "d_seq"),
    ] {
        assert_eq!(Inbound::parse(frame).unwrap_err(), FrameError::Unreadable(field), "{frame}");
    }
    let f = Inbound::parse(r#"{"action":"update","sequence":"\ud83d\ude00","d_seq":7}"#).unwrap();
    assert_eq!(&*sequence_key(f.sequence.unwrap()), "\u{1f600}");
}

#[test]
fn escaped_strings_are_decoded() {
    let f = Inbound::parse(r#"{"deviceid":"10\u00300","action":"date"}"#).unwrap();
    assert_eq!(f.deviceid.as_deref(), Some("1000"));
}

#[test]
fn outbound_skips_absent_fields() {
    let seq = raw("\"42\"".into());
    let text = Outbound { error: Some(0), deviceid: Some("d1"), sequence: Some(&seq), ..Default::default() }.to_text();
    assert_eq!(text, r#"{"error":0,"deviceid":"d1","sequence":"42"}"#);
    assert_eq!(
        register_refusal(404, "Not Found", "d1"),
        r#"{"error":404,"reason":"Not Found","deviceid":"d1","config":{"regInterval":15},"actionName":"register"}"#
    );
}
