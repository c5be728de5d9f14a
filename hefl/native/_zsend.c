/* hefl._zsend: zero-copy ZeroMQ sends whose completion wakes the sender directly.
 *
 * pyzmq tells a sender that ZeroMQ has released a zero-copy buffer through a garbage
 * collector thread: libzmq's I/O thread hands the buffer's key to a Python thread,
 * which sets a threading.Event, which wakes the sender. hefl's send waits for that on
 * every large array (the caller may modify its array once send returns), so each such
 * send paid three thread wake-ups and a GIL hand-off. Here libzmq's free callback posts
 * a semaphore the sender waits on with the GIL released: one wake-up, no Python thread.
 *
 * The functions are looked up through pyzmq's own (already loaded) extension module, so
 * they are those of the libzmq that owns pyzmq's sockets, and its version must be the
 * one pyzmq reports; where that fails, bind() fails and hefl keeps pyzmq's own tracked
 * sends. Nothing here touches Python objects from libzmq's thread: the callback only
 * posts the semaphore and sets a flag; buffers are released by Python code, with the
 * GIL, once the flag is set.
 *
 * It also sends and receives whole messages in one call each (send_multipart, recv):
 * on 2 cores the Python work around every message (a pyzmq call, a Frame and a loop
 * step per part) was a good part of what the channel spent beyond raw pyzmq.
 */
#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <semaphore.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

typedef struct {
    unsigned char _[64] __attribute__((aligned(8)));
} zmq_msg_t; /* libzmq >= 4.1: 64 bytes */
typedef void(zfree_fn)(void *data, void *hint);

static int (*p_init_data)(zmq_msg_t *, void *, size_t, zfree_fn *, void *);
static int (*p_msg_send)(zmq_msg_t *, void *, int);
static int (*p_msg_close)(zmq_msg_t *);
static int (*p_errno)(void);
typedef struct {
    void *socket;
    int fd;
    short events;
    short revents;
} zmq_pollitem_t; /* libzmq's, on POSIX */
static int (*p_poll)(zmq_pollitem_t *, int, long);
/* receiving, and copied sends (bound with the rest; NULL in a module bound by nothing) */
static int (*p_msg_init)(zmq_msg_t *);
static int (*p_msg_init_size)(zmq_msg_t *, size_t);
static int (*p_msg_recv)(zmq_msg_t *, void *, int);
static void *(*p_msg_data)(zmq_msg_t *);
static size_t (*p_msg_size)(const zmq_msg_t *);
static int (*p_msg_more)(const zmq_msg_t *);
static const char *(*p_msg_gets)(const zmq_msg_t *, const char *);
static int (*p_msg_move)(zmq_msg_t *, zmq_msg_t *);

#define Z_DONTWAIT 1
#define Z_SNDMORE 2

#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
#define WAIT_CLOCK CLOCK_MONOTONIC /* a wall-clock step cannot stretch a wait */
#define SEM_WAIT_UNTIL(s, ts) sem_clockwait((s), CLOCK_MONOTONIC, (ts))
#else
#define WAIT_CLOCK CLOCK_REALTIME
#define SEM_WAIT_UNTIL(s, ts) sem_timedwait((s), (ts))
#endif

/* One zero-copy message: what the callback signals, and the buffer it pins. */
typedef struct hint {
    sem_t sem;
    int done;          /* set (release) by the callback after sem_post: then it is ours */
    int released;      /* view released (Python side, with the GIL) */
    Py_buffer view;
    struct hint *next; /* in the orphan list */
} hint_t;

static hint_t *orphans; /* messages whose Sent object died before ZeroMQ released them */

static void on_free(void *data, void *h_) {
    (void)data;
    hint_t *h = (hint_t *)h_;
    /* This order matters: h may be freed (by Python code) as soon as done reads 1, so
     * setting done must be the callback's last touch of h. */
    sem_post(&h->sem);
    __atomic_store_n(&h->done, 1, __ATOMIC_RELEASE);
}

static int is_done(hint_t *h) { return __atomic_load_n(&h->done, __ATOMIC_ACQUIRE); }

static void release_view(hint_t *h) {
    if (!h->released) {
        h->released = 1;
        PyBuffer_Release(&h->view);
    }
}

static void destroy(hint_t *h) {
    release_view(h);
    sem_destroy(&h->sem);
    PyMem_RawFree(h);
}

static void orphan(hint_t *h) {
    h->next = orphans;
    orphans = h;
}

static void sweep_orphans(void) {
    /* Releasing a buffer can run Python code (a finalizer) that sends again and sweeps
     * again: take the list first, put the pending ones back, and only then free the rest. */
    hint_t *list = orphans, *done = NULL;
    orphans = NULL;
    while (list) {
        hint_t *h = list;
        list = h->next;
        if (is_done(h)) {
            h->next = done;
            done = h;
        } else {
            orphan(h);
        }
    }
    while (done) {
        hint_t *h = done;
        done = h->next;
        destroy(h);
    }
}

/* A zero-copy message over `view`, which the hint takes over (released once ZeroMQ lets
 * go): 0 with *msg and *out set, or the errno with the view released. */
static int pin(zmq_msg_t *msg, Py_buffer *view, hint_t **out) {
    hint_t *h = (hint_t *)PyMem_RawCalloc(1, sizeof(hint_t));
    if (!h || sem_init(&h->sem, 0, 0) != 0) {
        int err = h ? errno : ENOMEM;
        PyMem_RawFree(h);
        PyBuffer_Release(view);
        return err ? err : EINVAL;
    }
    h->view = *view;
    view->obj = NULL;
    if (p_init_data(msg, h->view.buf, (size_t)h->view.len, on_free, h) != 0) {
        int err = p_errno();
        destroy(h);
        return err ? err : ENOMEM;
    }
    *out = h;
    return 0;
}

/* A pinned message ZeroMQ refused: closing it calls on_free (nothing was sent). */
static void unsent(zmq_msg_t *msg, hint_t *h) {
    p_msg_close(msg);
    if (is_done(h)) {
        destroy(h);
    } else { /* cannot happen with libzmq, but never free what ZeroMQ may hold */
        orphan(h);
    }
}

/* ------------------------------------------------------------------ Sent */

typedef struct {
    PyObject_HEAD hint_t *h;
} SentObject;

static void Sent_dealloc(SentObject *self) {
    hint_t *h = self->h;
    if (h) {
        if (is_done(h)) {
            destroy(h);
        } else { /* ZeroMQ still holds the buffer: keep it pinned until it lets go */
            orphan(h);
        }
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Sent_wait(SentObject *self, PyObject *arg) {
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1.0 && PyErr_Occurred()) return NULL;
    hint_t *h = self->h;
    if (h->released) Py_RETURN_TRUE;
    if (!(timeout > 0)) timeout = 0; /* NaN too */
    if (timeout > 86400.0) timeout = 86400.0; /* callers loop; keeps the arithmetic finite */
    struct timespec ts;
    clock_gettime(WAIT_CLOCK, &ts);
    time_t whole = (time_t)timeout;
    long ns = ts.tv_nsec + (long)((timeout - (double)whole) * 1e9);
    ts.tv_sec += whole + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    int rc, err = 0;
    Py_BEGIN_ALLOW_THREADS;
    do {
        rc = SEM_WAIT_UNTIL(&h->sem, &ts);
        err = rc ? errno : 0;
    } while (rc != 0 && err == EINTR);
    Py_END_ALLOW_THREADS;
    if (rc != 0) {
        if (err == ETIMEDOUT) Py_RETURN_FALSE;
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    release_view(h); /* ZeroMQ is done with the memory: the caller may change it */
    Py_RETURN_TRUE;
}

static PyObject *Sent_done(SentObject *self, void *closure) {
    (void)closure;
    return PyBool_FromLong(self->h->released || is_done(self->h));
}

static PyMethodDef Sent_methods[] = {
    {"wait", (PyCFunction)Sent_wait, METH_O,
     "wait(timeout) -> bool: whether ZeroMQ released the buffer within timeout seconds"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Sent_getset[] = {
    {"done", (getter)Sent_done, NULL, "whether ZeroMQ has released the buffer", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject SentType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hefl._zsend.Sent",
    .tp_basicsize = sizeof(SentObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A zero-copy frame handed to ZeroMQ; wait() until ZeroMQ releases it.",
    .tp_dealloc = (destructor)Sent_dealloc,
    .tp_methods = Sent_methods,
    .tp_getset = Sent_getset,
};

/* ------------------------------------------------------------------ module */

/* 1 when bind() found the libzmq function a call needs and the socket is not null;
 * else 0 with the Python error set. */
static int usable(unsigned long long sock, int bound) {
    if (!bound) {
        PyErr_SetString(PyExc_RuntimeError, "hefl._zsend is not bound (call bind() first)");
        return 0;
    }
    if (!sock) {
        PyErr_SetString(PyExc_ValueError, "null socket");
        return 0;
    }
    return 1;
}

static PyObject *py_bind(PyObject *self, PyObject *args) {
    (void)self;
    const char *ext;
    int want_major, want_minor, want_patch;
    if (!PyArg_ParseTuple(args, "s(iii)", &ext, &want_major, &want_minor, &want_patch)) return NULL;
    /* pyzmq's extension is loaded already; symbols looked up through its handle come from
     * the libzmq it links (its dependency, or built into it): the one that owns its sockets. */
    void *lib = dlopen(ext, RTLD_NOW | RTLD_NOLOAD);
    if (!lib) {
        PyErr_Format(PyExc_OSError, "pyzmq's extension %s is not loaded: %s", ext, dlerror());
        return NULL;
    }
    void *init_data = dlsym(lib, "zmq_msg_init_data"), *msg_send = dlsym(lib, "zmq_msg_send");
    void *msg_close = dlsym(lib, "zmq_msg_close"), *errno_fn = dlsym(lib, "zmq_errno");
    void *version = dlsym(lib, "zmq_version");
    void *poll_fn = dlsym(lib, "zmq_poll");
    void *init_fn = dlsym(lib, "zmq_msg_init"), *init_size = dlsym(lib, "zmq_msg_init_size");
    void *recv_fn = dlsym(lib, "zmq_msg_recv"), *data_fn = dlsym(lib, "zmq_msg_data");
    void *size_fn = dlsym(lib, "zmq_msg_size"), *more_fn = dlsym(lib, "zmq_msg_more");
    void *gets_fn = dlsym(lib, "zmq_msg_gets"), *move_fn = dlsym(lib, "zmq_msg_move");
    if (!init_data || !msg_send || !msg_close || !errno_fn || !version ||
        !poll_fn || !init_fn || !init_size || !recv_fn || !data_fn || !size_fn || !more_fn ||
        !gets_fn || !move_fn) {
        dlclose(lib);
        PyErr_SetString(PyExc_OSError, "the libzmq functions are not visible through pyzmq");
        return NULL;
    }
    int major, minor, patch;
    ((void (*)(int *, int *, int *))version)(&major, &minor, &patch);
    if (major != want_major || minor != want_minor || patch != want_patch || major != 4 ||
        minor < 1) { /* zmq_msg_t is 64 bytes from 4.1 on */
        dlclose(lib);
        PyErr_Format(PyExc_OSError, "found libzmq %d.%d.%d, pyzmq reports %d.%d.%d (need the same, 4.1+)",
                     major, minor, patch, want_major, want_minor, want_patch);
        return NULL;
    }
    /* the handle stays open: the library must outlive every pending message */
    *(void **)&p_init_data = init_data;
    *(void **)&p_msg_send = msg_send;
    *(void **)&p_msg_close = msg_close;
    *(void **)&p_errno = errno_fn;
    *(void **)&p_poll = poll_fn;
    *(void **)&p_msg_init = init_fn;
    *(void **)&p_msg_init_size = init_size;
    *(void **)&p_msg_recv = recv_fn;
    *(void **)&p_msg_data = data_fn;
    *(void **)&p_msg_size = size_fn;
    *(void **)&p_msg_more = more_fn;
    *(void **)&p_msg_gets = gets_fn;
    *(void **)&p_msg_move = move_fn;
    return Py_BuildValue("(iii)", major, minor, patch);
}

static PyObject *py_send(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long sock;
    PyObject *obj;
    int flags;
    if (!PyArg_ParseTuple(args, "KOi", &sock, &obj, &flags)) return NULL;
    if (!usable(sock, p_init_data != NULL)) return NULL;
    sweep_orphans();
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    zmq_msg_t msg;
    hint_t *h;
    int rc, err = pin(&msg, &view, &h);
    if (err) return Py_BuildValue("(iO)", err, Py_None);
    for (;;) {
        Py_BEGIN_ALLOW_THREADS;
        rc = p_msg_send(&msg, (void *)(uintptr_t)sock, flags);
        err = rc < 0 ? p_errno() : 0;
        Py_END_ALLOW_THREADS;
        if (rc >= 0 || err != EINTR) break;
        if (PyErr_CheckSignals() < 0) { /* a handler raised: give up like pyzmq does */
            err = -1;
            break;
        }
    }
    if (rc < 0) {
        unsent(&msg, h);
        if (err == -1) return NULL; /* the signal handler's exception */
        return Py_BuildValue("(iO)", err ? err : EIO, Py_None);
    }
    SentObject *s = PyObject_New(SentObject, &SentType);
    if (!s) { /* the message is out: the buffer must stay pinned until it is released */
        orphan(h);
        return NULL;
    }
    s->h = h;
    return Py_BuildValue("(iN)", 0, (PyObject *)s);
}

/* ------------------------------------------------------------------ whole messages
 *
 * The receive and send loops of the transport, one C call per message instead of one
 * pyzmq call (and a Python object, and a Python-level loop) per frame: on 2 cores the
 * Python around each 1 MB message is what separates the channel from raw pyzmq. */

/* A received frame: owns its zmq_msg_t and exposes it as a (writable) buffer, zero-copy;
 * ZeroMQ's memory is freed when the last view of it (numpy array, memoryview) is gone. */
typedef struct {
    PyObject_HEAD zmq_msg_t msg;
} FrameObject;

static void Frame_dealloc(FrameObject *self) {
    p_msg_close(&self->msg);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Frame_getbuffer(FrameObject *self, Py_buffer *view, int flags) {
    /* the message is this object's alone (received, never shared): writable like
     * pyzmq's frames, so received arrays need no copy */
    return PyBuffer_FillInfo(view, (PyObject *)self, p_msg_data(&self->msg),
                             (Py_ssize_t)p_msg_size(&self->msg), 0, flags);
}

static Py_ssize_t Frame_len(FrameObject *self) { return (Py_ssize_t)p_msg_size(&self->msg); }

static PyBufferProcs Frame_as_buffer = {(getbufferproc)Frame_getbuffer, NULL};
static PySequenceMethods Frame_as_sequence = {.sq_length = (lenfunc)Frame_len};

static PyTypeObject FrameType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "hefl._zsend.Frame",
    .tp_basicsize = sizeof(FrameObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A received ZeroMQ frame, as a buffer (zero-copy).",
    .tp_dealloc = (destructor)Frame_dealloc,
    .tp_as_buffer = &Frame_as_buffer,
    .tp_as_sequence = &Frame_as_sequence,
};

/* Receive one part into `msg` without blocking: 0, or the errno (EAGAIN: none there). */
static int recv_part(zmq_msg_t *msg, void *sock) {
    for (;;) {
        p_msg_init(msg);
        if (p_msg_recv(msg, sock, Z_DONTWAIT) >= 0) return 0;
        int err = p_errno();
        p_msg_close(msg);
        if (err != EINTR) return err ? err : EIO;
    }
}

/* `msg` as a Python object: bytes below copy_below (and the message closed), else a
 * Frame that takes the message over. NULL with an exception (the message closed). */
static PyObject *part_object(zmq_msg_t *msg, Py_ssize_t copy_below) {
    size_t size = p_msg_size(msg);
    if (size < (size_t)copy_below) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)p_msg_data(msg), (Py_ssize_t)size);
        p_msg_close(msg);
        return b;
    }
    FrameObject *f = PyObject_New(FrameObject, &FrameType);
    if (!f) {
        p_msg_close(msg);
        return NULL;
    }
    p_msg_init(&f->msg);
    p_msg_move(&f->msg, msg); /* cannot fail on two initialised messages */
    p_msg_close(msg);
    return (PyObject *)f;
}

/* Read the rest of the message whose first part is in `msg` off `s`, keeping nothing. */
static void drop_message(zmq_msg_t *msg, void *s) {
    for (;;) {
        int more = p_msg_more(msg);
        p_msg_close(msg);
        if (!more || recv_part(msg, s) != 0) return; /* recv_part closes what it fails on */
    }
}

/* The message whose first part is in `msg` (taken over: closed here), the rest read off
 * `s`: (parts, user_id, complete) as recv describes. NULL with an exception, or NULL with
 * *err set when a later part could not be read (cannot happen with libzmq: atomic
 * delivery); either way every part of the message is off the socket. */
static PyObject *take_message(zmq_msg_t *msg, void *s, int want_user, Py_ssize_t copy_below,
                              Py_ssize_t max_parts, int *err) {
    PyObject *parts = PyList_New(0), *user = NULL;
    int failed = parts == NULL, complete = 1;
    *err = 0;
    for (Py_ssize_t i = 0;; i++) {
        int more = p_msg_more(msg);
        if (i == 1 && want_user && !failed) {
            const char *u = p_msg_gets(msg, "User-Id");
            if (u) {
                user = PyUnicode_DecodeUTF8(u, (Py_ssize_t)strlen(u), "replace");
                failed = user == NULL;
            }
        }
        if (failed || i >= max_parts) {
            complete = complete && i < max_parts;
            p_msg_close(msg);
        } else {
            PyObject *o = part_object(msg, copy_below);
            failed = o == NULL || PyList_Append(parts, o) < 0;
            Py_XDECREF(o);
        }
        if (!more) break;
        /* atomic delivery: the rest of the message is there already */
        int e = recv_part(msg, s);
        if (e) { /* never hand out half a message */
            if (!failed) *err = e;
            failed = 1;
            break;
        }
    }
    if (failed) {
        Py_XDECREF(parts);
        Py_XDECREF(user);
        return NULL;
    }
    if (!user) user = Py_NewRef(Py_None);
    return Py_BuildValue("(NNO)", parts, user, complete ? Py_True : Py_False);
}

/* recv(socket, timeout_ms, want_user, copy_below, max_parts, max_msgs): whole messages.
 *
 * Waits up to timeout_ms for one (GIL released; 0: only what is there already), then
 * takes up to max_msgs - 1 more that are there already, and returns them as a list of
 * (parts, user_id, complete): parts below copy_below bytes as bytes, larger ones as
 * Frames; user_id the "User-Id" property of the second part when want_user (CurveZMQ:
 * the name the ZAP handler gave the sender's key), else None; complete false when the
 * message had more than max_parts parts: the rest were received and dropped, so the
 * socket is at the next message either way. None when no message came (or a signal cut
 * the wait short), -errno on an error. Should building a message's objects fail, the
 * exception is raised and the messages taken in this call are lost with it: the
 * channel then fails as a whole, never silently. */
static PyObject *py_recv(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long sock;
    long timeout_ms;
    int want_user;
    Py_ssize_t copy_below, max_parts, max_msgs;
    if (!PyArg_ParseTuple(args, "Klpnnn", &sock, &timeout_ms, &want_user, &copy_below,
                          &max_parts, &max_msgs))
        return NULL;
    if (!usable(sock, p_msg_recv != NULL)) return NULL;
    void *s = (void *)(uintptr_t)sock;
    zmq_msg_t msg;
    int err = recv_part(&msg, s);
    if (err == EAGAIN && timeout_ms != 0) {
        zmq_pollitem_t item = {s, 0, 1 /* ZMQ_POLLIN */, 0};
        int rc;
        Py_BEGIN_ALLOW_THREADS;
        rc = p_poll(&item, 1, timeout_ms);
        err = rc < 0 ? p_errno() : 0;
        Py_END_ALLOW_THREADS;
        if (rc < 0 && err != EINTR) return PyLong_FromLong(-(long)(err ? err : EIO));
        err = rc > 0 ? recv_part(&msg, s) : EAGAIN;
    }
    if (err) {
        if (err == EAGAIN || err == EINTR) {
            if (PyErr_CheckSignals() < 0) return NULL;
            Py_RETURN_NONE;
        }
        return PyLong_FromLong(-(long)err);
    }
    PyObject *batch = PyList_New(0);
    for (;;) {
        if (!batch) { /* take the message off the socket all the same */
            drop_message(&msg, s);
            return NULL;
        }
        PyObject *one = take_message(&msg, s, want_user, copy_below, max_parts, &err);
        if (!one || PyList_Append(batch, one) < 0) {
            Py_XDECREF(one);
            Py_DECREF(batch);
            if (err) return PyLong_FromLong(-(long)err);
            return NULL;
        }
        Py_DECREF(one);
        if (PyList_GET_SIZE(batch) >= max_msgs || recv_part(&msg, s) != 0) break;
    }
    return batch;
}

/* send_multipart(socket, parts, copy_below): one message, without blocking.
 *
 * Parts below copy_below bytes are copied; larger ones are sent zero-copy, pinned until
 * ZeroMQ releases them. Returns (0, sents): one Sent per zero-copy part that is not an
 * immutable bytes object (wait on those before the caller may change its memory);
 * (errno, None) when ZeroMQ refused the message (EAGAIN on the first part: nothing was
 * sent; on a later one the message is ended with an empty frame, which the peer
 * rejects or ZeroMQ drops with it); None when a part is not a C-contiguous buffer
 * (nothing was sent: use pyzmq). Every buffer is taken before the first part goes. */
static PyObject *py_send_multipart(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long sock;
    PyObject *list;
    Py_ssize_t copy_below;
    if (!PyArg_ParseTuple(args, "KO!n", &sock, &PyList_Type, &list, &copy_below)) return NULL;
    if (!usable(sock, p_msg_init_size != NULL)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "a message needs at least one part");
        return NULL;
    }
    void *s = (void *)(uintptr_t)sock;
    sweep_orphans();
    PyObject *items = PySequence_Tuple(list); /* our own references, whatever the list does */
    if (!items) return NULL;
    Py_buffer *views = PyMem_Calloc((size_t)n, sizeof(Py_buffer));
    PyObject *sents = PyList_New(0), *result = NULL;
    Py_ssize_t got = 0;
    if (!views || !sents) {
        if (!views) PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(items, got), &views[got], PyBUF_C_CONTIGUOUS) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_BufferError) &&
                !PyErr_ExceptionMatches(PyExc_TypeError))
                goto done;
            PyErr_Clear(); /* not C-contiguous (or no buffer): the caller's other path */
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int flags = Z_DONTWAIT | (i < n - 1 ? Z_SNDMORE : 0);
        zmq_msg_t msg;
        hint_t *h = NULL;
        Py_buffer *v = &views[i];
        int err = 0;
        if (v->len < copy_below) {
            if (p_msg_init_size(&msg, (size_t)v->len) != 0) {
                err = p_errno();
                err = err ? err : ENOMEM;
            } else if (v->len) {
                memcpy(p_msg_data(&msg), v->buf, (size_t)v->len);
            }
        } else {
            err = pin(&msg, v, &h); /* the hint owns the view now */
            if (err) h = NULL;
        }
        if (!err) {
            int rc;
            while ((rc = p_msg_send(&msg, s, flags)) < 0 && (err = p_errno()) == EINTR) err = 0;
            if (rc >= 0) {
                err = 0;
            } else {
                err = err ? err : EIO;
                if (h) {
                    unsent(&msg, h);
                    h = NULL;
                } else {
                    p_msg_close(&msg);
                }
            }
        }
        if (err) {
            if (i > 0) { /* end the half-sent message: the next one must not become its tail */
                zmq_msg_t end;
                p_msg_init(&end);
                if (p_msg_send(&end, s, Z_DONTWAIT) < 0) p_msg_close(&end);
            }
            result = Py_BuildValue("(iO)", err, Py_None);
            goto done;
        }
        if (h) {
            SentObject *so = PyBytes_CheckExact(PyTuple_GET_ITEM(items, i))
                                 ? NULL /* immutable: nobody needs to wait for it */
                                 : PyObject_New(SentObject, &SentType);
            if (!so) { /* the part is out: it stays pinned until ZeroMQ lets go */
                orphan(h);
            } else {
                so->h = h;
                if (PyList_Append(sents, (PyObject *)so) < 0) {
                    Py_DECREF(so); /* orphans the hint */
                    /* the message is partly sent: finish it empty, as for a refusal */
                    if (i < n - 1) {
                        zmq_msg_t end;
                        p_msg_init(&end);
                        if (p_msg_send(&end, s, Z_DONTWAIT) < 0) p_msg_close(&end);
                    }
                    goto done;
                }
                Py_DECREF(so);
            }
        }
    }
    result = Py_BuildValue("(iO)", 0, sents);
done:
    if (views) {
        for (Py_ssize_t i = 0; i < got; i++)
            if (views[i].obj) PyBuffer_Release(&views[i]);
        PyMem_Free(views);
    }
    Py_XDECREF(sents);
    Py_DECREF(items);
    return result;
}

static PyObject *py_pending(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    sweep_orphans();
    long n = 0;
    for (hint_t *h = orphans; h; h = h->next) n++;
    return PyLong_FromLong(n);
}

static PyMethodDef methods[] = {
    {"bind", py_bind, METH_VARARGS,
     "bind(pyzmq_extension_path, version) -> version: use the libzmq pyzmq's extension links;"
     " OSError where it cannot be found or is another version"},
    {"send", py_send, METH_VARARGS,
     "send(socket_address, buffer, flags) -> (errno, Sent or None): one zero-copy frame"},
    {"recv", py_recv, METH_VARARGS,
     "recv(socket_address, timeout_ms, want_user, copy_below, max_parts, max_msgs) ->"
     " [(parts, user_id, complete)], None if no message came, or -errno: whole messages"},
    {"send_multipart", py_send_multipart, METH_VARARGS,
     "send_multipart(socket_address, parts, copy_below) -> (errno, [Sent] or None), or None"
     " when a part is not a C-contiguous buffer: one message, large parts zero-copy"},
    {"orphans", py_pending, METH_NOARGS,
     "orphans() -> int: frames still held by ZeroMQ whose Sent object is gone"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "hefl._zsend",
                                    "Zero-copy ZeroMQ sends with a direct completion wake-up.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__zsend(void) {
    if (PyType_Ready(&SentType) < 0 || PyType_Ready(&FrameType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m) return NULL;
    Py_INCREF(&SentType);
    if (PyModule_AddObject(m, "Sent", (PyObject *)&SentType) < 0) {
        Py_DECREF(&SentType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
