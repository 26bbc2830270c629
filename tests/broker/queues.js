// Queue part of the test broker: in-memory FIFO per channel, the unary queue API and the
// transactional QueuesDownstream stream (kubemq-protocol.md §4.5, §4.7, §4.8).
//
// Per channel: `ready` (FIFO of messages waiting), `inflight` (seq -> message held by an open
// QueuesDownstream transaction), counters.  Messages delivered by ReceiveQueueMessages are
// acked on delivery (destructive receive, as the community broker does).
import { nowNs, nsString, uuid, ERR, checkChannel, bodyIsEmpty } from './util.js';

const T = {
    Get: 1, AckAll: 2, AckRange: 3, NAckAll: 4, NAckRange: 5, ReQueueAll: 6, ReQueueRange: 7,
    ActiveOffsets: 8, TransactionStatus: 9, CloseByClient: 10, CloseByServer: 11,
};
const MAX_ITEMS_CAP = 200000;
const TX_NOT_FOUND = 'transaction is completed or transaction id not found';

export class Queues {
    // opts.minWaitMs: lower bound for QueuesDownstream WaitTimeout (community raises it to 1000;
    // the test broker defaults to 50 so tests stay fast).
    constructor({ minWaitMs = 50 } = {}) {
        this.minWaitMs = minWaitMs;
        this.channels = new Map();
        this.streams = new Set(); // open QueuesDownstream stream states
    }

    q(channel) {
        let q = this.channels.get(channel);
        if (!q) {
            q = { ready: [], inflight: new Map(), nextSeq: 1, waiters: new Set(),
                acked: 0, nacked: 0, delivered: 0, sent: 0 };
            this.channels.set(channel, q);
        }
        return q;
    }

    reset() {
        // Open transactions lose their messages; their streams stay open but settles will fail.
        for (const st of this.streams) st.txs.clear();
        for (const q of this.channels.values()) for (const w of q.waiters) w.wake();
        this.channels.clear();
    }

    stats() {
        const out = {};
        for (const [ch, q] of this.channels) {
            out[ch] = { depth: q.ready.length, inflight: q.inflight.size, acked: q.acked,
                nacked: q.nacked, delivered: q.delivered, sent: q.sent };
        }
        return out;
    }

    // Validates and enqueues one QueueMessage; returns a SendQueueMessageResult.
    send(m) {
        const id = m.MessageID || uuid();
        let err = null;
        if (!m.ClientID) err = ERR.clientId;
        else if (checkChannel(m.Channel)) err = ERR.queueName;
        else if (bodyIsEmpty(m.Body) && !m.Metadata) err = ERR.emptyMsg;
        if (err) return { MessageID: id, SentAt: '0', ExpirationAt: '0', DelayedTo: '0', IsError: true, Error: err };
        const q = this.q(m.Channel);
        const ts = nowNs();
        const msg = {
            MessageID: id, ClientID: m.ClientID, Channel: m.Channel, Metadata: m.Metadata || '',
            Body: m.Body || Buffer.alloc(0), Tags: m.Tags || {}, Policy: m.Policy || null,
            Attributes: { Timestamp: nsString(ts), Sequence: String(q.nextSeq++), MD5OfBody: '',
                ReceiveCount: 0, ReRouted: false, ReRoutedFromQueue: '', ExpirationAt: '0', DelayedTo: '0' },
        };
        q.ready.push(msg);
        q.sent++;
        this.wake(q);
        return { MessageID: id, SentAt: nsString(ts), ExpirationAt: '0', DelayedTo: '0', IsError: false, Error: '' };
    }

    wake(q) {
        for (const w of q.waiters) w.wake();
    }

    // Resolves when `q` holds at least `want` ready messages, or after waitMs, or on abort().
    // Returns the waiter so the caller can cancel it (stream end).
    wait(q, want, waitMs) {
        let waiter;
        const p = new Promise((resolve) => {
            const done = () => {
                clearTimeout(waiter.timer);
                q.waiters.delete(waiter);
                resolve();
            };
            waiter = {
                timer: setTimeout(done, waitMs),
                wake: () => { if (q.ready.length >= want) done(); },
                abort: done,
            };
            q.waiters.add(waiter);
        });
        return { promise: p, waiter };
    }

    take(q, n, { countReceive = true } = {}) {
        const msgs = q.ready.splice(0, n);
        for (const m of msgs) {
            if (countReceive) m.Attributes.ReceiveCount++;
            q.delivered++;
        }
        return msgs;
    }

    // ---- unary RPCs ----
    SendQueueMessage(call, cb) {
        cb(null, this.send(call.request));
    }

    SendQueueMessagesBatch(call, cb) {
        const r = call.request;
        const results = (r.Messages || []).map((m) => this.send(m));
        cb(null, { BatchID: r.BatchID || uuid(), Results: results, HaveErrors: results.some((x) => x.IsError) });
    }

    QueuesUpstream(call) {
        call.on('data', (r) => {
            const results = (r.Messages || []).map((m) => this.send(m));
            const bad = results.find((x) => x.IsError);
            call.write({ RefRequestID: r.RequestID, Results: results, IsError: !!bad, Error: bad ? bad.Error : '' });
        });
        call.on('end', () => call.end());
        call.on('error', () => {});
    }

    async ReceiveQueueMessages(call, cb) {
        const r = call.request;
        const reply = { RequestID: r.RequestID || uuid(), Messages: [], MessagesReceived: 0, MessagesExpired: 0,
            IsPeak: !!r.IsPeak, IsError: false, Error: '' };
        const fail = (e) => cb(null, { ...reply, IsError: true, Error: e });
        if (!r.ClientID) return fail(ERR.clientId);
        if (checkChannel(r.Channel)) return fail(ERR.queueName);
        if (r.MaxNumberOfMessages < 1 || r.MaxNumberOfMessages > 1024) return fail(ERR.maxMessages);
        if (r.WaitTimeSeconds < 0 || r.WaitTimeSeconds > 3600) return fail(ERR.waitTimeout);
        const q = this.q(r.Channel);
        // Test-broker choice: WaitTimeSeconds 0 means "do not wait" (community: 1 s).
        if (q.ready.length < r.MaxNumberOfMessages && r.WaitTimeSeconds > 0) {
            const { promise, waiter } = this.wait(q, r.MaxNumberOfMessages, r.WaitTimeSeconds * 1000);
            call.on('cancelled', waiter.abort);
            await promise;
            if (call.cancelled) return undefined;
        }
        if (r.IsPeak) {
            reply.Messages = q.ready.slice(0, r.MaxNumberOfMessages);
        } else {
            reply.Messages = this.take(q, r.MaxNumberOfMessages);
            q.acked += reply.Messages.length;
        }
        reply.MessagesReceived = reply.Messages.length;
        cb(null, reply);
        return undefined;
    }

    AckAllQueueMessages(call, cb) {
        const r = call.request;
        const reply = { RequestID: r.RequestID || uuid(), AffectedMessages: '0', IsError: false, Error: '' };
        if (!r.ClientID) return cb(null, { ...reply, IsError: true, Error: ERR.clientId });
        if (checkChannel(r.Channel)) return cb(null, { ...reply, IsError: true, Error: ERR.queueName });
        const q = this.q(r.Channel);
        const n = q.ready.length;
        q.ready.length = 0;
        q.acked += n;
        return cb(null, { ...reply, AffectedMessages: String(n) });
    }

    QueuesInfo(call, cb) {
        const filter = call.request.QueueName || '';
        const queues = [];
        let sent = 0, delivered = 0, waiting = 0;
        for (const [name, q] of this.channels) {
            if (filter && !name.includes(filter)) continue;
            sent += q.sent; delivered += q.delivered; waiting += q.ready.length;
            queues.push({ Name: name, Messages: String(q.ready.length), Bytes: '0',
                FirstSequence: q.ready.length ? q.ready[0].Attributes.Sequence : '0',
                LastSequence: String(q.nextSeq - 1), Sent: String(q.sent), Delivered: String(q.delivered),
                Waiting: String(q.ready.length), Subscribers: '0' });
        }
        cb(null, { RefRequestID: call.request.RequestID, Info: { TotalQueue: queues.length, Sent: String(sent),
            Delivered: String(delivered), Waiting: String(waiting), Queues: queues } });
    }

    // ---- StreamQueueMessage (legacy: one message per stream, kubemq-protocol.md §4.6) ----
    StreamQueueMessage(call) {
        const S = { Receive: 1, Ack: 2, Reject: 3, Visibility: 4, Resend: 5, Modified: 6 };
        const st = { msg: null, q: null, timer: null, waiter: null, receiving: false, closed: false };
        const write = (m) => { if (!st.closed) call.write({ Message: null, IsError: false, Error: '', ...m }); };
        const requeue = (countNack) => {
            if (!st.msg) return;
            const m = st.msg;
            st.msg = null;
            st.q.inflight.delete(m.Attributes.Sequence);
            st.q.ready.push(m);
            st.q.ready.sort((a, b) => Number(a.Attributes.Sequence) - Number(b.Attributes.Sequence));
            if (countNack) st.q.nacked++;
            this.wake(st.q);
        };
        const done = () => {
            if (st.closed) return;
            clearTimeout(st.timer);
            st.closed = true;
            call.end();
        };
        const finish = () => {
            if (st.closed && !st.msg) return;
            clearTimeout(st.timer);
            if (st.waiter) st.waiter.abort();
            requeue(false);
            st.closed = true;
        };
        const arm = (secs) => {
            clearTimeout(st.timer);
            st.timer = setTimeout(() => {
                write({ RequestID: '', StreamRequestTypeData: S.Receive, IsError: true,
                    Error: 'Error 129: current visibility timer expired' });
                requeue(true);
                done();
            }, (secs > 0 ? secs : 60) * 1000);
        };
        const settle = (r) => {
            const echo = { RequestID: r.RequestID, StreamRequestTypeData: r.StreamRequestTypeData };
            if (!st.msg) return write({ ...echo, IsError: true, Error: 'Error 124: no active message to ack' });
            if (r.StreamRequestTypeData === S.Visibility) {
                arm(r.VisibilitySeconds);
                return write(echo);
            }
            if ((r.StreamRequestTypeData === S.Ack || r.StreamRequestTypeData === S.Reject)
                && String(r.RefSequence) !== st.msg.Attributes.Sequence) {
                return write({ ...echo, IsError: true, Error: 'Error 125: ack sequence cannot be 0 or negative' });
            }
            const m = st.msg;
            if (r.StreamRequestTypeData === S.Reject) {
                requeue(true);
            } else {
                st.msg = null;
                st.q.inflight.delete(m.Attributes.Sequence);
                st.q.acked++;
                if (r.StreamRequestTypeData === S.Resend) {
                    this.send({ ...m, Channel: r.Channel, MessageID: '' });
                } else if (r.StreamRequestTypeData === S.Modified && r.ModifiedMessage) {
                    this.send({ ...r.ModifiedMessage, ClientID: r.ModifiedMessage.ClientID || m.ClientID });
                }
            }
            write(echo);
            return done();
        };
        call.on('data', async (r) => {
            if (st.closed) return;
            if (r.StreamRequestTypeData !== S.Receive) {
                settle(r);
                return;
            }
            const echo = { RequestID: r.RequestID || uuid(), StreamRequestTypeData: S.Receive };
            const fail = (e) => { write({ ...echo, IsError: true, Error: e }); done(); };
            if (st.msg || st.receiving) return fail('Error 128: subscription to queue is already active');
            if (!r.ClientID) return fail(ERR.clientId);
            if (checkChannel(r.Channel)) return fail(ERR.queueName);
            st.receiving = true;
            st.q = this.q(r.Channel);
            if (st.q.ready.length === 0) {
                const { promise, waiter } = this.wait(st.q, 1, (r.WaitTimeSeconds > 0 ? r.WaitTimeSeconds : 1) * 1000);
                st.waiter = waiter;
                await promise;
                st.waiter = null;
                if (st.closed) return undefined;
            }
            const [m] = this.take(st.q, 1);
            if (!m) return fail('Error 138: no new message in queue, wait time expired');
            st.msg = m;
            st.q.inflight.set(m.Attributes.Sequence, m);
            arm(r.VisibilitySeconds);
            return write({ ...echo, Message: m });
        });
        call.on('end', () => { finish(); call.end(); });
        call.on('cancelled', finish);
        call.on('close', finish);
        call.on('error', finish);
    }

    // ---- QueuesDownstream ----
    // One state per stream: open transactions (id -> {channel, msgs: Map seq -> msg}), a chain
    // that runs Gets one after another, and the waiter of the Get in progress.
    QueuesDownstream(call) {
        const st = { txs: new Map(), chain: Promise.resolve(), waiter: null, closed: false };
        this.streams.add(st);
        const write = (m) => { if (!st.closed) call.write(m); };
        const finish = () => {
            if (st.closed) return;
            st.closed = true;
            this.streams.delete(st);
            if (st.waiter) st.waiter.abort();
            // Every unsettled message returns to the front of its queue.
            for (const tx of st.txs.values()) this.returnToQueue(tx, [...tx.msgs.keys()], false);
            st.txs.clear();
        };
        call.on('data', (r) => {
            if (r.RequestTypeData === T.Get) {
                st.chain = st.chain.then(() => this.dsGet(st, r, write)).catch(() => {});
            } else {
                this.dsSettle(st, r, write);
            }
        });
        call.on('end', () => { finish(); call.end(); });
        call.on('cancelled', finish);
        call.on('close', finish);
        call.on('error', finish);
    }

    async dsGet(st, r, write) {
        const base = { TransactionId: uuid(), RefRequestId: r.RequestID, RequestTypeData: T.Get, Messages: [],
            ActiveOffsets: [], IsError: false, Error: '', TransactionComplete: false, Metadata: {} };
        const fail = (e) => write({ ...base, IsError: true, Error: e, TransactionComplete: true });
        if (!r.ClientID) return fail(ERR.clientId);
        if (checkChannel(r.Channel)) return fail(ERR.queueName);
        const q = this.q(r.Channel);
        const max = r.MaxItems > 0 ? Math.min(r.MaxItems, MAX_ITEMS_CAP) : MAX_ITEMS_CAP;
        const waitMs = Math.max(r.WaitTimeout || 0, this.minWaitMs);
        if (q.ready.length < max) {
            const { promise, waiter } = this.wait(q, max, waitMs);
            st.waiter = waiter;
            await promise;
            st.waiter = null;
            if (st.closed) return undefined;
        }
        const msgs = this.take(q, max);
        if (r.AutoAck || msgs.length === 0) {
            q.acked += r.AutoAck ? msgs.length : 0;
            return write({ ...base, Messages: msgs, TransactionComplete: true });
        }
        const tx = { id: base.TransactionId, channel: r.Channel, msgs: new Map() };
        for (const m of msgs) {
            tx.msgs.set(m.Attributes.Sequence, m);
            q.inflight.set(m.Attributes.Sequence, m);
        }
        st.txs.set(tx.id, tx);
        return write({ ...base, Messages: msgs });
    }

    // Puts the given sequences of tx back into their queue, ahead of newer messages.
    returnToQueue(tx, seqs, countNack) {
        const q = this.q(tx.channel);
        const back = [];
        for (const s of seqs) {
            const m = tx.msgs.get(s);
            if (!m) continue;
            tx.msgs.delete(s);
            q.inflight.delete(s);
            back.push(m);
        }
        // Back in sequence order ahead of newer messages (a NAck'd message is redelivered first).
        if (back.length) {
            q.ready.unshift(...back);
            q.ready.sort((a, b) => Number(a.Attributes.Sequence) - Number(b.Attributes.Sequence));
        }
        if (countNack) q.nacked += back.length;
        this.wake(q);
        return back.length;
    }

    dsSettle(st, r, write) {
        const reply = (extra) => write({ TransactionId: r.RefTransactionId, RefRequestId: r.RequestID,
            RequestTypeData: r.RequestTypeData, Messages: [], ActiveOffsets: [], IsError: false, Error: '',
            TransactionComplete: false, Metadata: {}, ...extra });
        const fail = (e) => reply({ IsError: true, Error: e });
        const tx = st.txs.get(r.RefTransactionId);
        if (r.RequestTypeData < T.AckAll || r.RequestTypeData > T.CloseByClient) return fail(ERR.requestType);
        if (!tx) return fail(TX_NOT_FOUND);
        const q = this.q(tx.channel);
        const range = (r.SequenceRange || []).map(String);
        const all = [...tx.msgs.keys()];
        let unknown = null;
        const pick = (seqs) => seqs.filter((s) => {
            if (tx.msgs.has(s)) return true;
            unknown = s;
            return false;
        });
        switch (r.RequestTypeData) {
        case T.AckAll:
        case T.AckRange: {
            const seqs = r.RequestTypeData === T.AckAll ? all : pick(range);
            for (const s of seqs) {
                tx.msgs.delete(s);
                q.inflight.delete(s);
                q.acked++;
            }
            break;
        }
        case T.NAckAll:
        case T.NAckRange:
            this.returnToQueue(tx, r.RequestTypeData === T.NAckAll ? all : pick(range), true);
            break;
        case T.ReQueueAll:
        case T.ReQueueRange: {
            if (checkChannel(r.ReQueueChannel)) return fail(ERR.queueName);
            const seqs = r.RequestTypeData === T.ReQueueAll ? all : pick(range);
            for (const s of seqs) {
                const m = tx.msgs.get(s);
                tx.msgs.delete(s);
                q.inflight.delete(s);
                q.acked++;
                this.send({ ...m, Channel: r.ReQueueChannel, MessageID: '', ClientID: m.ClientID || 'requeue' });
            }
            break;
        }
        case T.ActiveOffsets:
            return reply({ ActiveOffsets: all });
        case T.TransactionStatus:
            return reply({ TransactionComplete: tx.msgs.size === 0 });
        case T.CloseByClient:
            this.returnToQueue(tx, all, false);
            break;
        default:
            return fail(ERR.requestType);
        }
        if (tx.msgs.size === 0) st.txs.delete(tx.id);
        if (unknown !== null) return fail(`sequence ${unknown} is not in transaction ${tx.id}`);
        return undefined;
    }
}
