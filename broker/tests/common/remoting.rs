//! Remoting requests over a blocking TCP stream, for the broker's tests (not the operator's:
//! it needs the `ferrocket` crate's codec).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;

use ferrocket::remoting::command::Command;

/// Sends `req` and reads the next frame as its reply.
pub fn roundtrip(s: &mut TcpStream, req: &Command) -> Command {
    s.write_all(&req.encode()).unwrap();
    read_reply(s).expect("a reply")
}

/// Reads one frame. Errors: the connection ended or failed.
pub fn read_reply(s: &mut TcpStream) -> std::io::Result<Command> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut frame = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut frame)?;
    Ok(Command::decode(&frame).expect("the server's frames decode"))
}
