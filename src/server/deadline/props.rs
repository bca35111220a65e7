//! Property tests for `grpc-timeout` parsing and the derived deadline.

use std::time::Duration;

use proptest::prelude::*;
use tonic::metadata::{MetadataMap, MetadataValue};

use super::*;

/// The units of the gRPC spec and what one of each is worth.
const UNITS: [(char, Duration); 6] = [
    ('H', Duration::from_secs(3600)),
    ('M', Duration::from_secs(60)),
    ('S', Duration::from_secs(1)),
    ('m', Duration::from_millis(1)),
    ('u', Duration::from_micros(1)),
    ('n', Duration::from_nanos(1)),
];

fn unit() -> impl Strategy<Value = (char, Duration)> {
    prop::sample::select(UNITS.to_vec())
}

/// Header-like text: mostly digits and unit letters, so that near-valid values are common.
fn header_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{0,10}[HMSmunsxh +-]?",
        "[ +-]?[0-9]{1,9}[HMSmun]",
        "[0-9]{1,8}[^HMSmun]",
        "[0-9]{0,8}\\PC",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any text: no panic; an accepted value has the exact grammar the spec allows.
    #[test]
    fn parse_never_panics(v in header_like()) {
        if parse_grpc_timeout(&v).is_some() {
            let (digits, unit) = v.split_at(v.len() - 1);
            prop_assert!((1..=8).contains(&digits.len()), "{v:?}");
            prop_assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{v:?}");
            prop_assert!(UNITS.iter().any(|(u, _)| unit == u.to_string()), "{v:?}");
        }
    }

    /// `<1–8 digits><unit>` parses to exactly that many units (leading zeros included).
    #[test]
    fn valid_values_parse_exactly(n in 0u64..=99_999_999, width in 1usize..=8, (u, per) in unit()) {
        let digits = format!("{n:0width$}");
        prop_assume!(digits.len() <= 8);
        let text = format!("{digits}{u}");
        let want = per * u32::try_from(n).expect("8 digits fit in u32");
        prop_assert_eq!(parse_grpc_timeout(&text), Some(want), "{}", text);
    }

    /// More than 8 digits, no digits, a sign, or a unit outside the spec is rejected.
    #[test]
    fn invalid_values_are_rejected(
        n in 100_000_000u64..,
        (u, _) in unit(),
        bad_unit in "[^HMSmun]",
        sign in "[+-]",
    ) {
        prop_assert_eq!(parse_grpc_timeout(&format!("{n}{u}")), None);
        prop_assert_eq!(parse_grpc_timeout(&u.to_string()), None);
        prop_assert_eq!(parse_grpc_timeout(&format!("{sign}1{u}")), None);
        prop_assert_eq!(parse_grpc_timeout(&format!("1{bad_unit}")), None);
    }

    /// The buffer is 5% of the timeout, kept between 100 ms and 1 s.
    #[test]
    fn buffer_is_bounded(nanos in any::<u64>()) {
        let t = Duration::from_nanos(nanos);
        let b = buffer(t);
        prop_assert!(b >= Duration::from_millis(100) && b <= Duration::from_secs(1));
        if t / 20 >= Duration::from_millis(100) && t / 20 <= Duration::from_secs(1) {
            prop_assert_eq!(b, t / 20);
        }
    }

    /// The deadline is `now + timeout - buffer` (never before now) for a valid header, the
    /// operator's default for anything else.
    #[test]
    fn deadline_within_bounds(
        header in prop_oneof![
            (0u64..=99_999_999, unit()).prop_map(|(n, (u, _))| format!("{n}{u}")),
            "[ -~]{0,12}",
        ],
        default_secs in prop::option::of(0u64..100_000),
    ) {
        let default = default_secs.map(Duration::from_secs);
        let mut md = MetadataMap::new();
        let value = MetadataValue::try_from(header.as_str()).expect("printable ASCII is a valid header");
        md.insert("grpc-timeout", value);
        let before = Instant::now();
        let deadline = from_metadata(&md, default);
        let after = Instant::now();
        let expected = match parse_grpc_timeout(&header) {
            Some(t) => Some(t.saturating_sub(buffer(t))),
            None => default,
        };
        match (deadline, expected) {
            (None, None) => {}
            (Some(d), Some(offset)) => {
                prop_assert!(d >= before + offset && d <= after + offset, "{header:?}");
                if let Some(t) = parse_grpc_timeout(&header) {
                    prop_assert!(d <= after + t);
                    prop_assert!(d + Duration::from_secs(1) >= before + t);
                }
            }
            (d, e) => prop_assert!(false, "{header:?}: deadline {d:?}, expected offset {e:?}"),
        }
    }
}
