//! Table-driven tests of the wire protocol (`shared/protocol.md`): every example parses, and every
//! invalid case yields its expected error, with the expected field paths.

use lab_core::ParseError;
use lab_core::parse::{check_not_future, parse_client_frame, parse_dashboard_request, parse_metrics_body};
use lab_core::wire::system1::{self, DashboardReply, DashboardRequest, Event};
use lab_core::wire::system2::{ClientFrame, Register, Role, ServerFrame, SnapshotPayload};
use lab_core::{Metric, Network, Readings};

const EXAMPLE: &str = r#"{"serverId":"server-1","timestamp":1763800000123.456,
 "metrics":{"cpu":12.5,"memory":40.1,"disk":55.0,"network":{"in":300,"out":250}},
 "seq":42}"#;

fn example_metric() -> Metric {
    Metric {
        server_id: "server-1".into(),
        timestamp: 1763800000123.456,
        metrics: Readings {
            cpu: 12.5,
            memory: 40.1,
            disk: 55.0,
            network: Some(Network { rx: 300.0, tx: 250.0 }),
            extra: vec![],
        },
        seq: Some(42),
    }
}

/// Asserts that `result` is an `Invalid` error whose problems are exactly `expected`: each a
/// path, the batch index, and a fragment the message must contain.
#[track_caller]
fn assert_problems<T: std::fmt::Debug>(
    result: Result<T, ParseError>,
    expected: &[(&str, Option<usize>, &str)],
) {
    let err = result.expect_err("input must be refused");
    let ParseError::Invalid { problems, .. } = &err else {
        panic!("expected Invalid, got {err:?}")
    };
    let got: Vec<_> = problems.iter().map(|p| (p.path.as_str(), p.index)).collect();
    let want: Vec<_> = expected.iter().map(|(path, index, _)| (*path, *index)).collect();
    assert_eq!(got, want, "problem paths differ; problems: {problems:#?}");
    for (problem, (_, _, fragment)) in problems.iter().zip(expected) {
        assert!(
            problem.message.contains(fragment),
            "{:?} should contain {fragment:?}",
            problem.message
        );
    }
}

// ---- every example of protocol.md parses ----

#[test]
fn the_metric_example_parses_as_a_body() {
    assert_eq!(
        parse_metrics_body(EXAMPLE.as_bytes()).unwrap(),
        vec![example_metric()]
    );
}

#[test]
fn the_original_wire_format_without_seq_parses() {
    let body = r#"{"serverId":"server-3","timestamp":1763800000123,"metrics":{"cpu":1,"memory":2,"disk":3}}"#;
    let m = parse_metrics_body(body.as_bytes()).unwrap().remove(0);
    assert_eq!(m.seq, None);
    assert_eq!(m.metrics.network, None);
    assert_eq!(m.timestamp, 1763800000123.0);
}

#[test]
fn a_batch_body_parses_in_order() {
    let body = format!("[{EXAMPLE}, {EXAMPLE}]");
    let metrics = parse_metrics_body(body.as_bytes()).unwrap();
    assert_eq!(metrics, vec![example_metric(), example_metric()]);
}

#[test]
fn extra_numeric_readings_are_carried_in_order() {
    let body =
        r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":2,"disk":3,"temp":41.5,"load1":0.7}}"#;
    let m = parse_metrics_body(body.as_bytes()).unwrap().remove(0);
    assert_eq!(
        m.metrics.extra,
        vec![("temp".into(), 41.5), ("load1".into(), 0.7)]
    );
    let back = serde_json::to_string(&m).unwrap();
    assert!(back.contains(r#""temp":41.5,"load1":0.7"#), "{back}");
}

#[test]
fn escaped_keys_and_whitespace_are_plain_json() {
    let body =
        "  {\"server\\u0049d\" : \"s\", \"timestamp\":1,\n\"metrics\":{\"cpu\":1,\"memory\":2,\"disk\":3}}  ";
    assert_eq!(parse_metrics_body(body.as_bytes()).unwrap()[0].server_id, "s");
}

#[test]
fn duplicate_keys_take_the_last_value_as_javascript_does() {
    let body = r#"{"serverId":"a","serverId":"b","timestamp":1,"metrics":{"cpu":1,"memory":2,"disk":3}}"#;
    assert_eq!(parse_metrics_body(body.as_bytes()).unwrap()[0].server_id, "b");
}

#[test]
fn every_system2_client_frame_of_the_protocol_parses() {
    let metric_frame = format!(r#"{{"type":"metric",{}"#, &EXAMPLE[1..]);
    let cases: Vec<(String, ClientFrame)> = vec![
        (
            r#"{"type":"register","role":"producer","serverId":"server-1"}"#.into(),
            ClientFrame::Register(Register {
                role: Role::Producer,
                server_id: Some("server-1".into()),
                max_hz: None,
                batch_updates: None,
                token: None,
            }),
        ),
        (
            r#"{"type":"register","role":"dashboard","serverId":null}"#.into(),
            ClientFrame::Register(Register {
                role: Role::Dashboard,
                server_id: None,
                max_hz: None,
                batch_updates: None,
                token: None,
            }),
        ),
        (
            r#"{"type":"register","role":"dashboard","maxHz":10,"batchUpdates":true,"token":"s3cret"}"#
                .into(),
            ClientFrame::Register(Register {
                role: Role::Dashboard,
                server_id: None,
                max_hz: Some(10),
                batch_updates: Some(true),
                token: Some("s3cret".into()),
            }),
        ),
        (metric_frame.clone(), ClientFrame::Metric(example_metric())),
        (
            format!(r#"{{"type":"metrics","items":[{EXAMPLE},{EXAMPLE}]}}"#),
            ClientFrame::Metrics(vec![example_metric(), example_metric()]),
        ),
        (
            r#"{"type":"snapshot.request"}"#.into(),
            ClientFrame::SnapshotRequest { server_id: None },
        ),
        (
            r#"{"type":"snapshot.request","serverId":"server-2"}"#.into(),
            ClientFrame::SnapshotRequest {
                server_id: Some("server-2".into()),
            },
        ),
        // `type` need not come first.
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":2,"disk":3},"type":"metric"}"#
                .into(),
            ClientFrame::Metric(Metric {
                server_id: "s".into(),
                timestamp: 1.0,
                metrics: Readings {
                    cpu: 1.0,
                    memory: 2.0,
                    disk: 3.0,
                    network: None,
                    extra: vec![],
                },
                seq: None,
            }),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_client_frame(text.as_bytes()).unwrap(), expected, "{text}");
    }
}

#[test]
fn every_system1_dashboard_request_parses() {
    let cases = [
        (
            r#"{"type":"subscribe","serverId":"server-1"}"#,
            DashboardRequest::Subscribe {
                server_id: Some("server-1".into()),
                batch_updates: false,
            },
        ),
        (
            r#"{"type":"subscribe","serverId":null}"#,
            DashboardRequest::Subscribe {
                server_id: None,
                batch_updates: false,
            },
        ),
        (
            r#"{"type":"subscribe","serverId":null,"batchUpdates":true}"#,
            DashboardRequest::Subscribe {
                server_id: None,
                batch_updates: true,
            },
        ),
        (
            r#"{"type":"snapshot.request"}"#,
            DashboardRequest::SnapshotRequest { server_id: None },
        ),
        (
            r#"{"type":"snapshot.request","serverId":"a"}"#,
            DashboardRequest::SnapshotRequest {
                server_id: Some("a".into()),
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(
            parse_dashboard_request(text.as_bytes()).unwrap(),
            expected,
            "{text}"
        );
    }
}

#[test]
fn a_system1_subscribe_with_a_wrong_batch_flag_or_an_unknown_field_names_it() {
    for (text, field, says) in [
        (
            r#"{"type":"subscribe","batchUpdates":"yes"}"#,
            "/batchUpdates",
            "must be a boolean",
        ),
        (
            r#"{"type":"subscribe","maxHz":5}"#,
            "/maxHz",
            "is not a known field",
        ),
    ] {
        let e = parse_dashboard_request(text.as_bytes()).unwrap_err();
        let problems = e.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.path == field && p.message.contains(says)),
            "{text}: {problems:?}"
        );
    }
}

#[test]
fn every_server_frame_of_the_protocol_round_trips_with_its_wire_names() {
    let update = r#"{"type":"metric.update","payload":{"serverId":"server-1","timestamp":1763800000123.456,"windows":{"1000":{"samples":2,"averages":{"cpu":10.0,"memory":20.0,"disk":30.0,"networkIn":300.0,"networkOut":250.0},"min":{"cpu":5.0,"memory":20.0,"disk":30.0,"networkIn":300.0,"networkOut":250.0},"max":{"cpu":15.0,"memory":20.0,"disk":30.0,"networkIn":300.0,"networkOut":250.0}},"5000":{"samples":0,"averages":null}},"seq":42}}"#;
    let frames = [
        r#"{"type":"connection.ack","message":"Connected to System 2 WebSocket server"}"#,
        r#"{"type":"register.ack","role":"dashboard","serverFilter":null}"#,
        r#"{"type":"register.ack","role":"producer","serverFilter":"server-1"}"#,
        r#"{"type":"metric.ack","serverId":"server-1"}"#,
        r#"{"type":"metric.ack","serverId":"server-1","seq":42}"#,
        r#"{"type":"metrics.ack","accepted":100}"#,
        update,
        r#"{"type":"metric.updates","items":[]}"#,
        r#"{"type":"snapshot","payload":null}"#,
        r#"{"type":"snapshot","payload":[]}"#,
        r#"{"type":"error","message":"Invalid JSON payload"}"#,
        r#"{"type":"error","message":"Invalid metric payload","details":[{"path":"/metrics/cpu","message":"must be a percentage between 0 and 100 (got 120)"}]}"#,
    ];
    for text in frames {
        let frame: ServerFrame = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            frame.to_json(),
            text,
            "serializing must give back the protocol's exact text"
        );
    }
    let ServerFrame::MetricUpdate { payload } = serde_json::from_str(update).unwrap() else {
        unreachable!()
    };
    let keys: Vec<u64> = payload.windows.0.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        [1000, 5000],
        "windows keep ascending order: the original dashboard plots the first"
    );
    let snapshot: ServerFrame = serde_json::from_str(r#"{"type":"snapshot","payload":null}"#).unwrap();
    assert_eq!(
        snapshot,
        ServerFrame::Snapshot {
            payload: SnapshotPayload::One(None)
        }
    );
}

#[test]
fn system1_events_and_bodies_use_the_protocol_names() {
    let ingested = Event::Ingested {
        entry_id: "1-0".into(),
        payload: example_metric(),
    };
    let text = serde_json::to_string(&ingested).unwrap();
    assert!(
        text.starts_with(r#"{"type":"metric.ingested","entryId":"1-0","payload":{"serverId":"server-1""#),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), ingested);
    assert_eq!(ingested.server_id(), "server-1");

    // The original worker's payload (no windows, no seq) is a valid `metric.processed`.
    let original = r#"{"type":"metric.processed","entryId":"2-0","payload":{"serverId":"s","timestamp":5,"metrics":{"cpu":1,"memory":2,"disk":3}}}"#;
    let event: Event = serde_json::from_str(original).unwrap();
    assert_eq!(event.server_id(), "s");

    let accepted = serde_json::to_string(&system1::Accepted::new(vec!["1-0".into()])).unwrap();
    assert_eq!(accepted, r#"{"status":"accepted","accepted":1,"ids":["1-0"]}"#);
    let invalid = serde_json::to_string(&system1::InvalidPayload::new(vec![])).unwrap();
    assert_eq!(invalid, r#"{"error":"Invalid payload","details":[]}"#);
    let ack = serde_json::to_string(&DashboardReply::SubscriptionAck { server_id: None }).unwrap();
    assert_eq!(ack, r#"{"type":"subscription.ack","serverId":null}"#);
    let err = DashboardReply::Error {
        message: "Malformed client message".into(),
        details: vec![],
    };
    assert_eq!(
        serde_json::to_string(&err).unwrap(),
        r#"{"type":"error","message":"Malformed client message"}"#
    );
}

#[test]
fn stream_fields_round_trip_exactly() {
    let m = example_metric();
    let fields = system1::to_stream_fields(&m);
    let names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(names, ["serverId", "timestamp", "metrics", "seq"]);
    let back = system1::from_stream_fields(fields.iter().map(|(k, v)| (*k, v.as_bytes()))).unwrap();
    assert_eq!(back, m);
}

#[test]
fn foreign_stream_entries_are_refused_with_the_field_named() {
    use system1::StreamEntryError::*;
    let read = |fields: &[(&'static str, &'static str)]| {
        system1::from_stream_fields(fields.iter().map(|(k, v)| (*k, v.as_bytes())))
    };
    assert_eq!(
        read(&[("timestamp", "1"), ("metrics", "{}")]),
        Err(Missing("serverId"))
    );
    let bad_ts = read(&[
        ("serverId", "s"),
        ("timestamp", "soon"),
        ("metrics", r#"{"cpu":1,"memory":1,"disk":1}"#),
    ]);
    assert!(
        matches!(
            bad_ts,
            Err(Invalid {
                field: "timestamp",
                ..
            })
        ),
        "{bad_ts:?}"
    );
    let bad_cpu = read(&[
        ("serverId", "s"),
        ("timestamp", "1"),
        ("metrics", r#"{"cpu":900,"memory":1,"disk":1}"#),
    ]);
    let Err(Invalid { reason, .. }) = bad_cpu else {
        panic!("{bad_cpu:?}")
    };
    assert!(reason.contains("/metrics/cpu"), "{reason}");
}

// ---- every invalid case yields its expected error ----

#[test]
fn invalid_bodies_report_every_problem_with_its_path() {
    type Case = (
        &'static str,
        &'static [(&'static str, Option<usize>, &'static str)],
    );
    let cases: &[Case] = &[
        (
            "{}",
            &[
                ("/serverId", None, "is required"),
                ("/timestamp", None, "is required"),
                ("/metrics", None, "is required"),
            ],
        ),
        (
            r#"{"serverId":"","timestamp":"x","metrics":{"cpu":120}}"#,
            &[
                ("/serverId", None, "non-empty"),
                ("/timestamp", None, "must be a number (got a string)"),
                ("/metrics/cpu", None, "between 0 and 100 (got 120)"),
                ("/metrics/memory", None, "is required"),
                ("/metrics/disk", None, "is required"),
            ],
        ),
        (
            r#"{"serverId":5,"timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1}}"#,
            &[("/serverId", None, "must be a string (got a number)")],
        ),
        (
            r#"{"serverId":null,"timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1}}"#,
            &[("/serverId", None, "got null")],
        ),
        (
            r#"{"serverId":"a b","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1}}"#,
            &[("/serverId", None, "found ' ' at byte 1")],
        ),
        (
            r#"{"serverId":"sérveur","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1}}"#,
            &[("/serverId", None, "found 'é' at byte 1")],
        ),
        (
            r#"{"serverId":"s","timestamp":-1,"metrics":{"cpu":1,"memory":1,"disk":1}}"#,
            &[("/timestamp", None, "epoch milliseconds")],
        ),
        (
            r#"{"serverId":"s","timestamp":1e20,"metrics":{"cpu":1,"memory":1,"disk":1}}"#,
            &[("/timestamp", None, "epoch milliseconds")],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":-0.1,"memory":100.5,"disk":1}}"#,
            &[
                ("/metrics/cpu", None, "got -0.1"),
                ("/metrics/memory", None, "got 100.5"),
            ],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":"high","memory":1,"disk":true}}"#,
            &[
                ("/metrics/cpu", None, "got a string"),
                ("/metrics/disk", None, "got a boolean"),
            ],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":[1,2,3]}"#,
            &[("/metrics", None, "must be an object (got an array)")],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1,"network":{"in":1}}}"#,
            &[("/metrics/network/out", None, "is required")],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1,"network":{"in":-1,"out":"x"}}}"#,
            &[
                ("/metrics/network/in", None, "got -1"),
                ("/metrics/network/out", None, "must be a number"),
            ],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1,"network":{"in":1,"out":2e12}}}"#,
            &[("/metrics/network/out", None, "between 0 and 1e12")],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1,"network":"fast"}}"#,
            &[("/metrics/network", None, "must be an object (got a string)")],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1,"network":{"in":1,"out":1,"errs":0}}}"#,
            &[("/metrics/network/errs", None, "is not a known field")],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1,"temp":"hot"}}"#,
            &[("/metrics/temp", None, "must be a number (got a string)")],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1,"a/b":1}}"#,
            &[("/metrics/a~1b", None, "found '/'")],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1},"host":"x"}"#,
            &[("/host", None, "is not a known field")],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1},"seq":-1}"#,
            &[("/seq", None, "unsigned integer")],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1},"seq":1.5}"#,
            &[("/seq", None, "got 1.5")],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1},"seq":"1"}"#,
            &[("/seq", None, "got a string")],
        ),
        (
            r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1},"seq":18446744073709551616}"#,
            &[("/seq", None, "at most 18446744073709551615")],
        ),
        (
            r#""hello""#,
            &[("", None, "a metric object or an array of metrics (got a string)")],
        ),
        ("null", &[("", None, "got null")]),
        ("[]", &[("", None, "at least one metric")]),
        (
            r#"[{"serverId":"a","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1}},
                {"serverId":"b","timestamp":1,"metrics":{"cpu":101,"memory":1,"disk":1}},
                {"timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1}},
                7]"#,
            &[
                ("/1/metrics/cpu", Some(1), "got 101"),
                ("/2/serverId", Some(2), "is required"),
                ("/3", Some(3), "must be an object (got a number)"),
            ],
        ),
    ];
    for (body, expected) in cases {
        eprintln!("case: {body}");
        assert_problems(parse_metrics_body(body.as_bytes()), expected);
    }
}

#[test]
fn too_many_extra_readings_are_refused() {
    let extras: Vec<String> = (0..33).map(|i| format!(r#""r{i}":1"#)).collect();
    let body = format!(
        r#"{{"serverId":"s","timestamp":1,"metrics":{{"cpu":1,"memory":1,"disk":1,{}}}}}"#,
        extras.join(",")
    );
    assert_problems(
        parse_metrics_body(body.as_bytes()),
        &[("/metrics", None, "33 extra readings")],
    );
}

#[test]
fn over_long_server_ids_are_refused() {
    let id = "x".repeat(129);
    let body = format!(r#"{{"serverId":"{id}","timestamp":1,"metrics":{{"cpu":1,"memory":1,"disk":1}}}}"#);
    assert_problems(
        parse_metrics_body(body.as_bytes()),
        &[("/serverId", None, "at most 128 bytes long (got 129)")],
    );
    let ok = format!(
        r#"{{"serverId":"{}","timestamp":1,"metrics":{{"cpu":1,"memory":1,"disk":1}}}}"#,
        "x".repeat(128)
    );
    assert!(parse_metrics_body(ok.as_bytes()).is_ok());
}

#[test]
fn oversize_batches_are_refused_whole_without_diagnosing_each_item() {
    let item = r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1}}"#;
    let body = format!("[{}]", vec![item; 1001].join(","));
    assert_problems(
        parse_metrics_body(body.as_bytes()),
        &[("", None, "holds 1001 metrics; a batch holds at most 1000")],
    );
    let body = format!("[{}]", vec![item; 1000].join(","));
    assert_eq!(parse_metrics_body(body.as_bytes()).unwrap().len(), 1000);
}

#[test]
fn hostile_input_is_refused_cheaply_and_clearly() {
    // Over the size limit: refused before parsing.
    let big = vec![b' '; 256 * 1024 + 1];
    assert_eq!(
        parse_metrics_body(&big),
        Err(ParseError::TooLarge {
            len: 262_145,
            limit: 262_144
        })
    );
    assert!(matches!(
        parse_client_frame(&big),
        Err(ParseError::TooLarge { .. })
    ));
    // Deep nesting: an error, not a stack overflow, on every entry point.
    let deep = "[".repeat(200_000);
    for result in [
        parse_metrics_body(deep.as_bytes()).map(|_| ()),
        parse_client_frame(deep.as_bytes()).map(|_| ()),
        parse_dashboard_request(deep.as_bytes()).map(|_| ()),
    ] {
        let Err(ParseError::InvalidJson(msg)) = result else {
            panic!("{result:?}")
        };
        assert!(msg.contains("nesting deeper than 16"), "{msg}");
    }
    let deep_inside = format!(
        r#"{{"type":"metric","metrics":{{"x":{}1{}}}}}"#,
        "[".repeat(20),
        "]".repeat(20)
    );
    assert!(matches!(
        parse_client_frame(deep_inside.as_bytes()),
        Err(ParseError::InvalidJson(_))
    ));
    // Brackets inside strings do not count as nesting.
    let in_string = format!(
        r#"{{"serverId":"{}","timestamp":1,"metrics":{{"cpu":1,"memory":1,"disk":1}}}}"#,
        "[".repeat(100)
    );
    assert_problems(
        parse_metrics_body(in_string.as_bytes()),
        &[("/serverId", None, "found '[' at byte 0")],
    );
    // Numbers beyond f64: an error, not infinity.
    let huge = r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1e400,"memory":1,"disk":1}}"#;
    let Err(ParseError::InvalidJson(msg)) = parse_metrics_body(huge.as_bytes()) else {
        panic!()
    };
    assert!(msg.contains("number out of range"), "{msg}");
    // Not JSON, truncated JSON, invalid UTF-8.
    for bad in [
        &b"{\"serverId\":"[..],
        b"not json",
        b"{\"serverId\":\"\xff\xfe\"}",
        b"",
    ] {
        assert!(
            matches!(parse_metrics_body(bad), Err(ParseError::InvalidJson(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn system2_errors_carry_the_protocols_exact_messages() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("not json", "Invalid JSON payload", &[""]),
        ("{\"type\":\"metric\"", "Invalid JSON payload", &[""]),
        (r#"{"type":"nope"}"#, "Unknown message type", &["/type"]),
        (r#"{"type":5}"#, "Unknown message type", &["/type"]),
        (r#"{"role":"producer"}"#, "Unknown message type", &["/type"]),
        ("[1,2]", "Unknown message type", &["/type"]),
        (r#""metric""#, "Unknown message type", &["/type"]),
        (
            r#"{"type":"metric","serverId":"s","timestamp":1,"metrics":{"cpu":120,"memory":1,"disk":1}}"#,
            "Invalid metric payload",
            &["/metrics/cpu"],
        ),
        (
            r#"{"type":"metric","serverId":"","timestamp":"now"}"#,
            "Invalid metric payload",
            &["/serverId", "/timestamp", "/metrics"],
        ),
        (
            r#"{"type":"metric","serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1},"items":[]}"#,
            "Invalid metric payload",
            &["/items"],
        ),
        (
            r#"{"type":"metrics","items":"all"}"#,
            "Invalid metric payload",
            &["/items"],
        ),
        (
            r#"{"type":"metrics","items":[]}"#,
            "Invalid metric payload",
            &["/items"],
        ),
        (r#"{"type":"metrics"}"#, "Invalid metric payload", &["/items"]),
        (
            r#"{"type":"metrics","items":[{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1}},{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":-4}}],"seq":3}"#,
            "Invalid metric payload",
            &["/seq", "/items/1/metrics/disk"],
        ),
        (
            r#"{"type":"register","role":"admin"}"#,
            "Invalid register payload",
            &["/role"],
        ),
        (r#"{"type":"register"}"#, "Invalid register payload", &["/role"]),
        (
            r#"{"type":"register","role":"dashboard","maxHz":0,"batchUpdates":"yes","serverId":""}"#,
            "Invalid register payload",
            &["/serverId", "/maxHz", "/batchUpdates"],
        ),
        (
            r#"{"type":"register","role":"dashboard","maxHz":5000}"#,
            "Invalid register payload",
            &["/maxHz"],
        ),
        (
            r#"{"type":"register","role":"producer","admin":true}"#,
            "Invalid register payload",
            &["/admin"],
        ),
        (
            r#"{"type":"snapshot.request","serverId":5}"#,
            "Invalid message payload",
            &["/serverId"],
        ),
    ];
    for (text, message, paths) in cases {
        let err = parse_client_frame(text.as_bytes()).expect_err(text);
        let ServerFrame::Error {
            message: got,
            details,
        } = err.to_system2_frame()
        else {
            unreachable!()
        };
        assert_eq!(&got, message, "{text}");
        let got_paths: Vec<&str> = details.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(&got_paths, paths, "{text}: {details:#?}");
    }
    let long_token = format!(
        r#"{{"type":"register","role":"producer","token":"{}"}}"#,
        "t".repeat(257)
    );
    let err = parse_client_frame(long_token.as_bytes()).unwrap_err();
    assert!(err.problems()[0].message.contains("at most 256 bytes"), "{err}");
}

#[test]
fn batch_problems_name_their_item() {
    let frame = r#"{"type":"metrics","items":[{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1}},{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":-4}}]}"#;
    assert_problems(
        parse_client_frame(frame.as_bytes()),
        &[("/items/1/metrics/disk", Some(1), "got -4")],
    );
}

#[test]
fn system1_dashboard_errors() {
    assert_eq!(
        parse_dashboard_request(br#"{"type":"publish"}"#),
        Err(ParseError::UnknownType(Some("publish".into())))
    );
    assert_eq!(
        parse_dashboard_request(br#"{"serverId":"x"}"#),
        Err(ParseError::UnknownType(None))
    );
    assert!(matches!(
        parse_dashboard_request(b"{oops"),
        Err(ParseError::InvalidJson(_))
    ));
    assert_problems(
        parse_dashboard_request(br#"{"type":"subscribe","serverId":5}"#),
        &[("/serverId", None, "must be a string")],
    );
    assert_problems(
        parse_dashboard_request(br#"{"type":"subscribe","server":"a"}"#),
        &[("/server", None, "is not a known field")],
    );
}

#[test]
fn future_timestamps_are_refused_with_the_skew() {
    let mut m = example_metric();
    m.timestamp = 1_000_000.0;
    assert_eq!(
        check_not_future(std::slice::from_ref(&m), 1_000_000.0, 60_000.0, None),
        Ok(())
    );
    m.timestamp = 1_060_000.0;
    assert_eq!(
        check_not_future(std::slice::from_ref(&m), 1_000_000.0, 60_000.0, None),
        Ok(()),
        "the limit is inclusive"
    );
    m.timestamp = 1_090_000.0;
    assert_problems(
        check_not_future(std::slice::from_ref(&m), 1_000_000.0, 60_000.0, None),
        &[("/timestamp", None, "90000 ms ahead")],
    );
    let mut ok = example_metric();
    ok.timestamp = 990_000.0;
    let batch = [ok.clone(), m.clone(), ok];
    assert_problems(
        check_not_future(&batch, 1_000_000.0, 60_000.0, Some("/items")),
        &[("/items/1/timestamp", Some(1), "ahead of the server clock")],
    );
    assert_problems(
        check_not_future(&batch, 1_000_000.0, 60_000.0, Some("")),
        &[("/1/timestamp", Some(1), "ahead")],
    );
}

#[test]
fn objects_written_as_arrays_are_refused() {
    // serde's derived structs accept `[a, b]` for `{"x":a,"y":b}`; the protocol does not.
    let network = r#"{"serverId":"s","timestamp":1,"metrics":{"cpu":1,"memory":1,"disk":1,"network":[1,2]}}"#;
    assert_problems(
        parse_metrics_body(network.as_bytes()),
        &[("/metrics/network", None, "must be an object (got an array)")],
    );
    let batch_of_arrays = r#"[["s",1,{"cpu":1,"memory":1,"disk":1}]]"#;
    assert_problems(
        parse_metrics_body(batch_of_arrays.as_bytes()),
        &[("/0", Some(0), "must be an object (got an array)")],
    );
    let frame = r#"["metric","s",1,{"cpu":1,"memory":1,"disk":1},null,null]"#;
    assert_eq!(
        parse_client_frame(frame.as_bytes()),
        Err(ParseError::UnknownType(None))
    );
}

#[test]
fn a_coalesced_update_carries_what_it_stands_for() {
    use lab_core::outbox::{Outbox, Preferences};
    use std::sync::Arc;
    let outbox: Outbox<String> = Outbox::new(
        1,
        Preferences {
            filter: None,
            max_hz: Some(1),
            batch: false,
        },
        8,
    );
    for seq in 11..=13 {
        let payload =
            format!(r#"{{"serverId":"a","timestamp":1763800000123.456,"windows":{{}},"seq":{seq}}}"#);
        outbox.push(&Arc::new(
            lab_core::outbox::Update::new("a", &payload).with_seq(Some(seq)),
        ));
    }
    let sent = outbox.take(8);
    let ServerFrame::MetricUpdate { payload } =
        serde_json::from_str(&sent[0].frame).expect("a protocol frame")
    else {
        panic!("{}", sent[0].frame)
    };
    assert_eq!(
        (
            payload.seq,
            payload.coalesced,
            payload.first_seq,
            payload.last_seq
        ),
        (Some(13), Some(2), Some(11), Some(13))
    );
    let plain: ServerFrame = serde_json::from_str(
        r#"{"type":"metric.update","payload":{"serverId":"a","timestamp":1.0,"windows":{}}}"#,
    )
    .unwrap();
    assert!(
        !plain.to_json().contains("coalesced"),
        "an update that stands for nothing else says nothing"
    );
}

#[test]
fn system2_tells_a_dashboard_of_dropped_updates_with_a_gap_frame() {
    let text = r#"{"type":"gap","eventType":"metric.update","events":7,"fromMs":1000,"toMs":1250,"reason":"dropped"}"#;
    let frame: ServerFrame = serde_json::from_str(text).expect("a protocol frame");
    assert_eq!(frame.to_json(), text, "the exact text both ways");
    let ServerFrame::Gap(gap) = frame else {
        panic!("{text}")
    };
    assert_eq!(gap.events, Some(7));
}
