//! An instance is ready when its published port answers HTTP.

use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// One probe: any HTTP response (whatever the status) counts.
pub async fn answers_http(host: &str, port: u16) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect((host, port)).await.ok()?;
        let request = format!("GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: berth-readiness\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        let mut read = 0;
        while read < 5 {
            let n = stream.read(&mut head[read..]).await.ok()?;
            if n == 0 {
                break;
            }
            read += n;
        }
        Some(head[..read].starts_with(b"HTTP/"))
    };
    matches!(
        tokio::time::timeout(ATTEMPT_TIMEOUT, probe).await,
        Ok(Some(true))
    )
}
