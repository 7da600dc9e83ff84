/* systemd's readiness protocol (sd_notify): a datagram to $NOTIFY_SOCKET.
 * A few lines of our own rather than a libsystemd dependency. */
#ifndef SRV_NOTIFY_H
#define SRV_NOTIFY_H

/* Sends state (e.g. "READY=1") when NOTIFY_SOCKET is set; returns 0, or -1
 * when it is set but the message could not be sent. */
int srv_notify(const char *state);

#endif
