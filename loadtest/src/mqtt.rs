//! A minimal MQTT 3.1.1 codec (CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH at QoS 0,
//! PINGREQ/PINGRESP, DISCONNECT), carried in binary WebSocket frames with the `mqtt`
//! subprotocol. It exists so that Mosquitto is driven by the very same WebSocket stack and
//! connection code ([`crate::client::Conn`]) as Switchyard: only the bytes inside the frames
//! differ. No I/O here; [`Reader`] reassembles packets that span or share WebSocket messages.

use anyhow::{Result, bail};

pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const SUBACK: u8 = 9;
pub const PINGRESP: u8 = 13;

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// CONNECT with a clean session and the given keepalive (seconds).
pub fn connect(client_id: &str, keepalive: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + client_id.len());
    put_str(&mut body, "MQTT");
    body.push(4); // protocol level 3.1.1
    body.push(0x02); // clean session
    body.extend_from_slice(&keepalive.to_be_bytes());
    put_str(&mut body, client_id);
    packet(0x10, &body)
}

/// SUBSCRIBE to one topic filter at QoS 0.
pub fn subscribe(packet_id: u16, topic: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(5 + topic.len());
    body.extend_from_slice(&packet_id.to_be_bytes());
    put_str(&mut body, topic);
    body.push(0);
    packet(0x82, &body)
}

/// PUBLISH at QoS 0, not retained.
pub fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + topic.len() + payload.len());
    put_str(&mut body, topic);
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

pub fn pingreq() -> Vec<u8> {
    vec![0xC0, 0x00]
}

/// One decoded packet from the broker.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet {
    ConnAck {
        code: u8,
    },
    SubAck {
        granted: u8,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
    },
    PingResp,
    /// Any other type (by its type nibble); not expected from a broker at QoS 0.
    Other(u8),
}

/// Reassembles MQTT packets from WebSocket message payloads.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete packet, if the buffer holds one.
    pub fn next_packet(&mut self) -> Result<Option<Packet>> {
        if self.buf.len() < 2 {
            return Ok(None);
        }
        let (mut len, mut mult, mut i) = (0usize, 1usize, 1usize);
        loop {
            let Some(&b) = self.buf.get(i) else { return Ok(None) };
            len += (b & 0x7f) as usize * mult;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
            mult *= 128;
            if i > 4 {
                bail!("malformed MQTT remaining length");
            }
        }
        if self.buf.len() < i + len {
            return Ok(None);
        }
        let first = self.buf[0];
        let body: Vec<u8> = self.buf[i..i + len].to_vec();
        self.buf.drain(..i + len);
        let packet = match first >> 4 {
            CONNACK if body.len() >= 2 => Packet::ConnAck { code: body[1] },
            SUBACK if body.len() >= 3 => Packet::SubAck { granted: body[2] },
            PUBLISH => {
                if body.len() < 2 {
                    bail!("short MQTT PUBLISH");
                }
                let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
                if body.len() < 2 + tlen {
                    bail!("short MQTT PUBLISH topic");
                }
                let topic = String::from_utf8_lossy(&body[2..2 + tlen]).into_owned();
                let qos = (first >> 1) & 0x03;
                let start = 2 + tlen + if qos > 0 { 2 } else { 0 };
                Packet::Publish { topic, payload: body.get(start..).unwrap_or_default().to_vec() }
            }
            PINGRESP => Packet::PingResp,
            other => Packet::Other(other),
        };
        Ok(Some(packet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_through_the_reader() {
        let mut r = Reader::default();
        let p = publish("dev/1/cmd", &vec![b'x'; 300]);
        r.push(&p[..3]);
        assert_eq!(r.next_packet().unwrap(), None);
        r.push(&p[3..]);
        r.push(&[0xD0, 0x00]);
        match r.next_packet().unwrap() {
            Some(Packet::Publish { topic, payload }) => {
                assert_eq!(topic, "dev/1/cmd");
                assert_eq!(payload.len(), 300);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.next_packet().unwrap(), Some(Packet::PingResp));
        assert_eq!(r.next_packet().unwrap(), None);
    }

    #[test]
    fn connect_has_the_311_header() {
        let c = connect("abc", 60);
        assert_eq!(&c[..2], &[0x10, 15]);
        assert_eq!(&c[2..8], b"\x00\x04MQTT");
        assert_eq!(c[8], 4);
    }
}
