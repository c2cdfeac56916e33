//! The machine's own limit for a request/reply: a C program that bounces 40
//! bytes between two processes over TCP on 127.0.0.1 (blocking sockets,
//! `TCP_NODELAY`), as fast as the kernel allows. Every ZEO round trip pays
//! at least this much, so the bench reports its figures as fractions of it.
//!
//! The program is compiled with the system's `cc` in the scratch directory;
//! without a C compiler the bench goes on and says so.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::capture;

/// One measurement: round trips per second, and the median round trip.
#[derive(Clone, Copy, Debug)]
pub struct PingPong {
    pub per_sec: f64,
    pub median_s: f64,
}

const SOURCE: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MESSAGE 40
#define MAX_SAMPLES 4000000

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int exact(int fd, char *buf, int n, int writing) {
    int done = 0;
    while (done < n) {
        int r = writing ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
        if (r <= 0) return -1;
        done += r;
    }
    return 0;
}

static int cmp(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    int one = 1;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 1) ||
        getsockname(listener, (struct sockaddr *)&addr, &len)) {
        perror("listen");
        return 1;
    }
    pid_t child = fork();
    if (child == 0) {
        int fd = accept(listener, NULL, NULL);
        char buf[MESSAGE];
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        while (exact(fd, buf, MESSAGE, 0) == 0 && exact(fd, buf, MESSAGE, 1) == 0) {}
        _exit(0);
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr)) {
        perror("connect");
        kill(child, SIGKILL);
        return 1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[MESSAGE];
    memset(buf, 'z', MESSAGE);
    float *samples = malloc(sizeof(float) * MAX_SAMPLES);
    long n = 0;
    double start = now(), end = start + seconds, t = start;
    while (t < end && n < MAX_SAMPLES) {
        double before = t;
        if (exact(fd, buf, MESSAGE, 1) || exact(fd, buf, MESSAGE, 0)) {
            perror("round trip");
            kill(child, SIGKILL);
            return 1;
        }
        t = now();
        samples[n++] = (float)(t - before);
    }
    close(fd);
    waitpid(child, NULL, 0);
    qsort(samples, n, sizeof(float), cmp);
    printf("round_trips=%ld seconds=%.6f median_s=%.9f\n", n, t - start, n ? samples[n / 2] : 0.0);
    return 0;
}
"#;

/// Compiles and runs the ping-pong for `seconds`; `Err` says why it could
/// not (no C compiler, say).
pub fn measure(dir: &Path, seconds: f64) -> Result<PingPong, String> {
    let source = dir.join("pingpong.c");
    let program = dir.join("pingpong");
    fs::write(&source, SOURCE).map_err(|e| format!("{}: {e}", source.display()))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    capture(
        Command::new(&cc)
            .args(["-O2", "-o"])
            .arg(&program)
            .arg(&source),
        Duration::from_secs(60),
    )
    .map_err(|e| format!("compiling the ping-pong with {cc}: {e}"))?;
    let out = capture(
        Command::new(&program).arg(seconds.to_string()),
        Duration::from_secs_f64(seconds + 30.0),
    )?;
    let value = |key: &str| -> Result<f64, String> {
        out.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .ok_or_else(|| format!("ping-pong printed no {key}: {out:?}"))
    };
    let (trips, elapsed) = (value("round_trips")?, value("seconds")?);
    Ok(PingPong {
        per_sec: trips / elapsed.max(f64::MIN_POSITIVE),
        median_s: value("median_s")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ping_pong_compiles_and_bounces() {
        let dir = tempfile_dir();
        let p = measure(&dir, 0.2).unwrap();
        assert!(p.per_sec > 0.0 && p.median_s > 0.0, "{p:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("zeo-pingpong-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
