//! Objectives on a simulated clock.

use super::*;

/// A whole hour (500 000 × 3600 s).
const T0: u64 = 1_800_000_000;

fn at(minute: u64, second: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0 + minute * 60 + second)
}

fn ok() -> Outcome<'static> {
    Outcome {
        status: 200,
        streamed: true,
        ttft: Some(Duration::from_millis(300)),
        duration: Duration::from_secs(2),
        ..Outcome::default()
    }
}

fn failed() -> Outcome<'static> {
    Outcome {
        status: 502,
        error_type: Some("502"),
        ..ok()
    }
}

/// 60 requests a minute; during minutes `burst` every other one fails (a burn rate of 100
/// against 99.5 %). Returns the minutes at which the page alert held, checked at the end of
/// each minute.
fn paging_minutes(burst: std::ops::Range<u64>, minutes: u64) -> Vec<u64> {
    let engine = SloEngine::new(vec![ObjectiveConfig::availability(0.995).build().unwrap()]);
    let mut paged = Vec::new();
    for minute in 0..minutes {
        for second in 0..60 {
            let bad = burst.contains(&minute) && second % 2 == 0;
            engine.record(&if bad { failed() } else { ok() }, at(minute, second));
        }
        if engine.status(at(minute, 59))[0].page {
            paged.push(minute);
        }
    }
    paged
}

#[test]
fn an_error_burst_pages_at_the_expected_minute_and_clears_when_it_should() {
    // Burst from minute 120 to 134. The 1 h burn rate after n burst minutes is
    // 100 × n / 60: it reaches 14.4 at n = 9 (minute 128; 15.0, while 8 minutes give 13.3).
    // The 5 min rate is 100 from the first burst minute. After the burst the 5 min window
    // holds a burst minute until minute 138, and none from minute 139: the page clears then,
    // though the 1 h rate stays above 14.4 (the two windows are why).
    let paged = paging_minutes(120..135, 180);
    assert_eq!(paged, (128..139).collect::<Vec<_>>());
    // A short burst never pages: 5 minutes of 50 % errors is 8.3 over 1 h.
    // (Nor do a few failures on a quiet route: see `few_failures_never_alert`.)
    assert!(paging_minutes(120..125, 180).is_empty());
}

#[test]
fn few_failures_never_alert() {
    let engine = SloEngine::new(vec![ObjectiveConfig::availability(0.999).build().unwrap()]);
    // A quiet route: 4 requests in a minute, all failed: a burn rate of 1000, no alert.
    for second in 0..4 {
        engine.record(&failed(), at(0, second));
    }
    let status = &engine.status(at(0, 30))[0];
    assert!(status.windows[0].burn_rate.unwrap() > 999.0);
    assert!(!status.page && !status.ticket);
    engine.record(&failed(), at(0, 40));
    assert!(engine.status(at(0, 41))[0].page, "the fifth failure pages");
}

#[test]
fn the_ticket_alert_needs_six_hours_and_thirty_minutes_over_six() {
    let engine = SloEngine::new(vec![ObjectiveConfig::availability(0.99).build().unwrap()]);
    // 8 % errors (burn 8) for 7 hours: ticket, never page.
    for minute in 0..420 {
        for second in 0..50 {
            let bad = second % 25 < 2;
            engine.record(&if bad { failed() } else { ok() }, at(minute, second));
        }
        let status = &engine.status(at(minute, 59))[0];
        assert!(!status.page, "minute {minute}");
        // From the second minute: 4 bad events a minute, and at least 5 are needed.
        assert_eq!(
            status.ticket,
            minute >= 1,
            "minute {minute}: {:?}",
            status.windows
        );
    }
    let status = &engine.status(at(419, 59))[0];
    for window in &status.windows {
        assert!((window.burn_rate.unwrap() - 8.0).abs() < 1e-9, "{window:?}");
    }
}

#[test]
fn budgets_add_up() {
    let mut config = ObjectiveConfig::availability(0.99);
    config.period_days = Some(2);
    let engine = SloEngine::new(vec![config.build().unwrap()]);
    let (mut good, mut total) = (0u64, 0u64);
    // Three days, one request every 7 minutes, every 13th failing.
    for i in 0..(3 * 24 * 60 / 7) {
        let minute = i * 7;
        let bad = i % 13 == 0;
        engine.record(&if bad { failed() } else { ok() }, at(minute, 0));
    }
    let now = at(3 * 24 * 60, 0);
    let status = &engine.status(now)[0];
    // Recount by hand what falls in the last 48 whole hours (the current hour included).
    let now_hour = (T0 + 3 * 24 * 3600) / 3600;
    for i in 0..(3 * 24 * 60 / 7) {
        let hour = (T0 + i * 7 * 60) / 3600;
        if hour + 48 > now_hour {
            total += 1;
            good += u64::from(i % 13 != 0);
        }
    }
    assert_eq!(status.period, Counts { good, total });
    let allowed = 0.01 * total as f64;
    let expected = 1.0 - (total - good) as f64 / allowed;
    assert!((status.budget_remaining - expected).abs() < 1e-12);
    assert!(
        status.budget_remaining < 0.0,
        "7.7 % errors overspend a 1 % budget"
    );
    // Cumulative counts hold everything since the start.
    let all = 3 * 24 * 60 / 7;
    assert_eq!(status.cumulative.total, all);
    assert_eq!(
        status.cumulative.total - status.cumulative.good,
        all.div_ceil(13)
    );
    // Each window's good plus bad is its total, and the windows nest.
    for pair in status.windows.windows(2) {
        assert!(pair[0].total <= pair[1].total);
        assert!(pair[0].good <= pair[0].total);
    }
}

#[test]
fn each_objective_counts_what_concerns_it() {
    let ttft = ObjectiveConfig::ttft(Duration::from_millis(500), 0.9)
        .build()
        .unwrap();
    let fast = ok();
    let slow = Outcome {
        ttft: Some(Duration::from_millis(501)),
        ..ok()
    };
    let plain = Outcome {
        streamed: false,
        ..ok()
    };
    assert_eq!(ttft.judge(&fast), Some(true));
    assert_eq!(ttft.judge(&slow), Some(false));
    assert_eq!(ttft.judge(&plain), None, "streamed only");
    assert_eq!(ttft.judge(&failed()), None, "availability counts failures");
    let aborted = Outcome {
        aborted: true,
        ..ok()
    };
    let availability = ObjectiveConfig::availability(0.99).build().unwrap();
    assert_eq!(availability.judge(&aborted), None, "the client left");
    for (status, error_type, good) in [
        (200, None, true),
        (200, Some("stream_truncated"), false),
        (400, Some("invalid_request_error"), true),
        (404, None, true),
        (429, None, false),
        (503, None, false),
        (0, None, false),
    ] {
        let outcome = Outcome {
            status,
            error_type,
            ..ok()
        };
        assert_eq!(availability.judge(&outcome), Some(good), "{status}");
    }
    let mut scoped = ObjectiveConfig::availability(0.99);
    scoped.model = Some("gpt-4o".into());
    scoped.route = Some("/v1/chat/completions".into());
    let scoped = scoped.build().unwrap();
    assert_eq!(
        scoped.name(),
        "availability./v1/chat/completions.gpt-4o".replace('/', "_")
    );
    let ours = Outcome {
        model: Some("gpt-4o"),
        route: Some("/v1/chat/completions"),
        ..ok()
    };
    assert_eq!(scoped.judge(&ours), Some(true));
    let other = Outcome {
        model: Some("gpt-4o-mini"),
        ..ours.clone()
    };
    assert_eq!(scoped.judge(&other), None);
    let mut rate = ObjectiveConfig::availability(0.9);
    rate.objective = "tokens_per_second".into();
    rate.min_tokens_per_second = Some(20.0);
    let rate = rate.build().unwrap();
    let quick = Outcome {
        output_tokens_per_second: Some(25.0),
        ..ok()
    };
    assert_eq!(rate.judge(&quick), Some(true));
    assert_eq!(rate.judge(&ok()), None, "no rate measured");
}

#[test]
fn bad_configurations_name_their_field() {
    type Change = fn(&mut ObjectiveConfig);
    let cases: [(Change, &str); 7] = [
        (|c| c.target = 1.0, "target"),
        (|c| c.target = f64::NAN, "target"),
        (|c| c.objective = "ttft".into(), "threshold_ms"),
        (|c| c.objective = "latency".into(), "objective"),
        (
            |c| c.objective = "tokens_per_second".into(),
            "min_tokens_per_second",
        ),
        (|c| c.period_days = Some(365), "period_days"),
        (|c| c.name = Some("a b".into()), "name"),
    ];
    for (change, field) in cases {
        let mut config = ObjectiveConfig::availability(0.99);
        change(&mut config);
        assert_eq!(config.build().unwrap_err().field, field, "{config:?}");
    }
}

#[test]
fn the_defaults_are_availability_and_streamed_ttft() {
    let engine = SloEngine::new(SloEngine::defaults());
    let names: Vec<&str> = engine.objectives().map(|o| o.name()).collect();
    assert_eq!(names, ["availability", "ttft"]);
    let status = engine.status(at(0, 0));
    assert_eq!(status[0].target, 0.995);
    assert_eq!(
        status[1].description,
        "first token ≤ 2000 ms (streamed) for 95 %"
    );
    assert_eq!(status[1].budget_remaining, 1.0);
    assert!(status[1].windows.iter().all(|w| w.burn_rate.is_none()));
    // A burning objective is found for the exchanges it covers.
    for second in 0..60 {
        engine.record(&failed(), at(0, second));
    }
    assert_eq!(engine.burning(&ok(), at(0, 59)), Some("availability"));
}
