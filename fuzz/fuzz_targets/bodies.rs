//! The JSON body of every route that takes one, into its type, as the routes' extractor reads it
//! (the first byte picks the route). Nothing may panic; a refusal must name a field.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::app::decisions::DecisionRequest;
use portcullis::app::keys::CreateKey;
use portcullis::app::orgs::{CreateOrg, UpdateOrg};
use portcullis::app::passes::IssuePass;
use portcullis::app::site::{GateBody, HolidayBody, LockdownBody, ModeBody, RuleBody, ZoneBody};
use portcullis::app::guest::{CodeRequest, SignIn};
use portcullis::app::hosts::{DepartmentInput, HostSettings};
use portcullis::app::users::{CreateUser, UpdateUser};
use portcullis::app::visitors::{DenyInput, VisitorInput};
use portcullis::app::visits::{CreateAppointment, Review, WalkIn};
use portcullis::error::AppError;
use portcullis::http::extract::parse;
use portcullis::http::routes::{ChangePasswordRequest, ExtendBody, LoginRequest, RefreshRequest, RevokeBody};

fn read<T: serde::de::DeserializeOwned>(body: &[u8]) {
    match parse::<T>(body) {
        Ok(_) => {}
        Err(AppError::Validation { fields }) => assert!(!fields.is_empty(), "a refusal names its field"),
        Err(other) => panic!("a body is refused as invalid, not as {other:?}"),
    }
}

/// An appointment's recurrence, parsed and expanded from a fixed start in a zone with DST.
fn rrule(body: &[u8]) {
    let Ok(text) = std::str::from_utf8(body) else { return };
    let tz: chrono_tz::Tz = chrono_tz::Europe::Berlin;
    if let Ok(rule) = portcullis::app::rrule::Rule::parse(text, tz) {
        let start = chrono::DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default();
        if let Ok(starts) = rule.starts(start, tz) {
            assert!(starts.len() <= portcullis::app::rrule::MAX_OCCURRENCES, "bounded");
            assert!(starts.windows(2).all(|w| w[0] < w[1]), "in order");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else { return };
    match route % 30 {
        0 => read::<DecisionRequest>(body),
        1 => read::<CreateKey>(body),
        2 => read::<CreateOrg>(body),
        3 => read::<UpdateOrg>(body),
        4 => read::<IssuePass>(body),
        5 => read::<GateBody>(body),
        6 => read::<HolidayBody>(body),
        7 => read::<LockdownBody>(body),
        8 => read::<ModeBody>(body),
        9 => read::<RuleBody>(body),
        10 => read::<ZoneBody>(body),
        11 => read::<CreateUser>(body),
        12 => read::<UpdateUser>(body),
        13 => read::<ChangePasswordRequest>(body),
        14 => read::<ExtendBody>(body),
        15 => read::<LoginRequest>(body),
        16 => read::<RefreshRequest>(body),
        17 => read::<RevokeBody>(body),
        18 => read::<CreateAppointment>(body),
        19 => read::<VisitorInput>(body),
        20 => read::<DenyInput>(body),
        21 => read::<WalkIn>(body),
        22 => read::<Review>(body),
        23 => read::<SignIn>(body),
        24 => read::<CodeRequest>(body),
        25 => read::<DepartmentInput>(body),
        26 => read::<HostSettings>(body),
        28 => read::<portcullis::app::visitors::Details>(body),
        27 => rrule(body),
        _ => read::<serde_json::Value>(body),
    }
});
