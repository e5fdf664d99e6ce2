//! One WebSocket text frame into the hub's session handlers: the first byte picks an app session
//! of the seeded user (even) or the seeded device's own session (odd), the rest is the frame.
//! The device is online, so app commands are routed to it (and abandoned after the input), and
//! the device's reports, acks and queries reach the router, the live state and the recorder.
//! Every answer the hub would send must be JSON a client can parse (or the literal `pong`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::ids::SessionId;
use switchyard::session::fuzzing::{app_frame, device_frame};
use switchyard_fuzz::Fixture;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    // Text frames are UTF-8 by then: the codec fails the connection (1007) otherwise.
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let f = Fixture::with_device();
    let answer = if which % 2 == 0 {
        f.rt.block_on(app_frame(&f.hub, &f.user, SessionId::next(), text))
    } else {
        device_frame(&f.hub, &f.device, f.device_session, f.user.as_str(), text)
    };
    f.drain();
    if let Some(answer) = answer
        && answer != "pong"
    {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&answer) {
            panic!("the hub would send a frame clients cannot parse ({e}): {answer}");
        }
    }
});
