/*
 * The cross-instance protocol of RedisStore, as a model checked by spin:
 * loads under a lease (`SET NX PX` with a token, and a look at the
 * entry in the same script), the store-if-unchanged
 * write against the key's tombstone, the remove that leaves a tombstone,
 * lease release by token, lease expiry, and an instance that dies
 * holding its lease.
 *
 * Run it (Debian's `spin` and a C compiler; `tests/tests/model.rs` runs
 * the same in `cargo test`):
 *
 *     spin -a protocol.pml && cc -O2 -DSAFETY -o pan pan.c && ./pan -m100000
 *
 * and expect "errors: 0". Every step of the model is one Redis command or
 * one Lua script, which Redis runs atomically; everything between two
 * steps may interleave with the other instances' steps.
 *
 * Checked, over every interleaving of INSTANCES instances loading one key,
 * one writer changing the origin and removing the key, lease expiry and
 * one instance dying at any point while it holds a lease:
 *
 *   1. A value loaded before a remove is never served after it: once the
 *      remove has returned, neither L2 nor a read of it yields the old
 *      value (assertions `fresh_after_remove` and
 *      `l2_fresh_after_remove`).
 *   2. While a lease is live, one instance loads under it: no two
 *      instances hold a live lease at once (assertion in `acquired`).
 *   3. Nobody waits forever: every instance that does not die ends with a
 *      value or with its own load (no invalid end state).
 *   4. A value stored is not loaded again: unless a remove, a lease's
 *      expiry or a death intervened, one load runs under a lease, even
 *      for an instance whose read missed before the holder stored and
 *      released (assertion `loaded_once`).
 *
 * What the model assumes of time (not modelled):
 *   - a tombstone outlives every load that began before it (its keep is
 *     longer than the longest load);
 *   - a lease holder stops counting as the loader when its lease expires:
 *     the lease is taken for the load timeout plus a margin, and the
 *     holder's load ends at its load timeout; what it loaded may still be
 *     written, under rule 1's check.
 */

#define INSTANCES 3
#define NONE 255     /* no entry in L2 */
#define OLD 0        /* the origin's value before the write */
#define NEW 1        /* ... and after it */

byte origin = OLD;   /* the origin's (database's) current value */
byte counter = 1;    /* the namespace's invalidation counter `P v` */
byte entry = NONE;   /* the entry `P e:{K}`: the value it holds */
byte tomb = 0;       /* the tombstone `P x:{K}`: 0 when absent */
byte lease = 0;      /* the lease `P l:{K}`: holder's token, 0 when absent */
bool removed = false;/* the writer's remove has returned */
bool dead = false;   /* one instance died holding its lease */
byte holders = 0;    /* instances that hold a live lease */
byte leased = 0;     /* loads begun under a lease */
bool trouble = false;/* a remove, an expiry or a death happened */
bool holding[INSTANCES + 1];

/* One instance reading K: a hit is served; a miss reads the counter,
 * takes the lease or waits for whoever holds it, and loads. */
proctype instance(byte id) {
    byte v0;       /* the counter when the load began */
    byte got;      /* what was read or loaded */
    byte rounds = 0;
    bool over;     /* the lease came with an entry in L2 */

read:
    /* GET entry: a hit is served. A read that began after the remove
     * returned never yields the old value. */
    atomic {
        got = entry;
        assert(!(removed && got == OLD))     /* fresh_after_remove */
    }
    if
    :: got != NONE -> goto done
    :: else
    fi;
    /* GET counter (with the entry in one MGET on a single node; a
     * separate command on a cluster, which this order models) */
    v0 = counter;
    rounds++;

    /* The lease script: SET lease id NX PX ttl, and EXISTS entry */
    atomic {
        if
        :: lease == 0 ->
            over = (entry != NONE);
            lease = id;
            holding[id] = true;
            holders++;
            assert(holders == 1);           /* acquired */
        :: else
        fi
    }
    if
    :: lease == id && !over -> goto load
    :: lease == id && over -> goto reread
    :: else -> goto wait
    fi;

reread:
    /* The lease came over a value (a holder stored it and released its
     * lease since this instance's read): read it again, and serve it,
     * giving the lease up (the release script). */
    atomic {
        got = entry;
        assert(!(removed && got == OLD))     /* fresh_after_remove */
    }
    if
    :: got != NONE ->
        atomic {
            if
            :: holding[id] -> holding[id] = false; holders--
            :: else
            fi;
            if
            :: lease == id -> lease = 0
            :: else
            fi
        }
        goto done
    :: else -> goto load
    fi;

wait:
    /* Poll the entry; the lease gone without an entry means its holder
     * failed, died or was overtaken by a remove: try again. A waiter
     * also stops waiting at its own deadline and loads itself. */
    if
    :: entry != NONE -> goto read
    :: lease == 0 && entry == NONE ->
        if
        :: rounds < 2 -> goto read
        :: else -> goto unleased
        fi
    :: true -> goto unleased                 /* its load deadline */
    fi;

unleased:
    /* Loads without a lease (deadline reached, or Redis trouble); its
     * write is checked like any other. */
    got = origin;
    atomic {
        if
        :: tomb > v0 -> skip                 /* refused */
        :: else ->
            entry = got;
            assert(!(removed && got == OLD))  /* l2_fresh_after_remove */
        fi
    }
    goto done;

load:
    /* The origin's value, read after v0 */
    atomic {
        got = origin;
        if
        :: holding[id] ->
            assert(leased == 0 || trouble);  /* loaded_once */
            leased++
        :: else
        fi
    }
    if
    :: !dead ->                              /* this instance dies here */
        atomic {
            dead = true;
            trouble = true;
            /* it keeps its lease until the lease expires */
        }
        goto gone
    :: true -> skip
    fi;
    /* The write script on [entry, tombstone, lease]: refused when a
     * remove came after the load began; then the lease is released if it
     * still holds this instance's token (GET == token, then DEL). Its load
     * is over either way; only the lease's expiry or a remove ends
     * another's claim. */
    atomic {
        if
        :: tomb > v0 -> skip
        :: else ->
            entry = got;
            assert(!(removed && got == OLD))  /* l2_fresh_after_remove */
        fi;
        if
        :: holding[id] -> holding[id] = false; holders--
        :: else
        fi;
        if
        :: lease == id -> lease = 0
        :: else
        fi
    }
done:
gone:
    /* forget the locals, so that end states do not differ by them */
    skip;
    d_step { v0 = 0; got = 0; rounds = 0; over = false }
}

/* The application writes the origin, then removes the key. */
proctype writer() {
    byte v;
    origin = NEW;
    /* INCR counter: a separate command */
    atomic { counter++; v = counter }
    /* The remove script on [entry, tombstone, lease] */
    atomic {
        trouble = true;
        entry = NONE;
        if
        :: tomb < v -> tomb = v
        :: else
        fi;
        if
        :: lease != 0 ->
            holding[lease] = false;
            holders--;
            lease = 0
        :: else
        fi
    }
    removed = true
}

/* A lease expires on its own: at any moment (the holder's deadline has
 * then passed too), or because its holder died. */
proctype expiry() {
    do
    :: atomic {
        lease != 0 ->
            trouble = true;
            holding[lease] = false;
            holders--;
            lease = 0
       }
    :: timeout -> break
    od
}

init {
    atomic {
        byte i = 1;
        do
        :: i <= INSTANCES -> run instance(i); i++
        :: else -> break
        od;
        run writer();
        run expiry()
    }
}
