/*
 * A single node's hit on the tracked connection (`tracked.rs`), as a
 * model checked by spin: reads that are one `GET` while the counter read
 * at the connection's current epoch is known, reads that read the
 * counter again (`CLIENT CACHING yes`, `GET counter`, `GET entry`),
 * Redis's invalidation messages on the same connection, redis-rs's
 * reader handing on messages and replies in the order they came, and
 * invalidations made by another instance meanwhile.
 *
 * Run it (Debian's `spin` and a C compiler; `tests/tests/model.rs` runs
 * the same in `cargo test`):
 *
 *     spin -a tracking.pml && cc -O2 -DSAFETY -o pan pan.c && ./pan -m100000
 *
 * and expect "errors: 0". Each Redis command runs atomically; a
 * pipeline's commands are written together but may interleave with
 * other clients' commands; every store-side step that is one atomic
 * load or store in the code is one step here.
 *
 * Checked, over every interleaving of TASKS tasks reading one tagged
 * entry READS times each on one connection, and INVALIDATIONS
 * invalidations of its tag by another instance:
 *
 *   A read that starts after an invalidation has returned never serves
 *   the entry it invalidated (the assertion at the end of `Task`).
 */

#define TASKS 2
#define READS 2
#define INVALIDATIONS 2
#define ENTRY_VERSION 1  /* the entry's version; the counter starts here */

mtype = { GET_ENTRY, GET_COUNTER, ENTRY, COUNTER, MESSAGE };

/* Redis */
byte counter = ENTRY_VERSION; /* the namespace's invalidation counter */
byte stamp = 0;               /* the tag's invalidation version */
bool tracked = false;         /* Redis tracks the counter for the connection */
byte invalidations = 0;       /* invalidations that have returned */

/* The tracked connection: commands as written, replies and messages as
 * Redis sent them, and whose reply comes next. */
chan req = [4] of { mtype };
chan out = [8] of { mtype, byte };
chan inflight = [4] of { byte };
chan reply[TASKS] = [2] of { mtype, byte };

/* The store, in process. */
byte epoch = 0;               /* messages seen on the connection */
bool armed = false;           /* the armed word: a counter ... */
byte armed_epoch = 0;         /* ... read at this epoch */
byte armed_counter = 0;
byte known_counter = 0;       /* the versions known, read at this counter (0: none) */
byte known_stamp = 0;

proctype Redis() {
    mtype cmd;
end:
    do
    :: atomic {
        req?cmd ->
        if
        :: cmd == GET_ENTRY -> out!ENTRY,0
        :: cmd == GET_COUNTER ->
            /* CLIENT CACHING yes, then GET counter: tracked from here on */
            tracked = true;
            out!COUNTER,counter
        fi
    }
    od
}

/* Another instance's tag invalidation: one script that moves the counter
 * and records the tag's version; Redis sends the message to a tracking
 * connection as the script ends, and the key is tracked no more. */
proctype Invalidator() {
    byte i;
    for (i : 1 .. INVALIDATIONS) {
        atomic {
            counter++;
            stamp = counter;
            if
            :: tracked -> out!MESSAGE,0; tracked = false
            :: else
            fi
        }
        invalidations++
    }
}

/* redis-rs's reader: a message goes to the store's callback before any
 * reply that came after it is handed on. */
proctype Reader() {
    mtype kind;
    byte v, t;
end:
    do
    :: out?kind,v ->
        if
        :: kind == MESSAGE -> epoch++; armed = false
        :: else -> inflight?t; reply[t]!kind,v
        fi
    od
}

proctype Task(byte id) {
    byte n, e, e2, c, ck, after;
    bool have, invalid;
    mtype kind;
    byte v;
    for (n : 1 .. READS) {
        after = invalidations;
        e = epoch;
        atomic { have = armed && armed_epoch == e; c = armed_counter }
        if
        :: have ->
            atomic { req!GET_ENTRY; inflight!id }
            reply[id]?kind,v;
            e2 = epoch;
            if
            :: e2 == e -> ck = c
            :: else -> ck = 0
            fi
        :: else ->
            atomic { req!GET_COUNTER; inflight!id; req!GET_ENTRY; inflight!id }
            reply[id]?kind,c;
            reply[id]?kind,v;
            e2 = epoch;
            if
            :: e2 == e ->
                atomic { armed = true; armed_epoch = e; armed_counter = c }
                ck = c
            :: else -> ck = 0
            fi
        fi;
        /* The versions known decide when read at that counter; else
         * they are read again (STAMPS, on the main connection). */
        atomic {
            if
            :: ck != 0 && ck == known_counter -> invalid = (known_stamp > ENTRY_VERSION)
            :: else ->
                known_counter = counter;
                known_stamp = stamp;
                invalid = (stamp > ENTRY_VERSION)
            fi
        }
        assert(invalid || after == 0)
    }
}

init {
    byte t;
    atomic {
        run Redis();
        run Reader();
        run Invalidator();
        for (t : 0 .. TASKS - 1) {
            run Task(t)
        }
    }
}
