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
static int (*p_getsockopt)(void *, int, void *, size_t *);
typedef struct {
    void *socket;
    int fd;
    short events;
    short revents;
} zmq_pollitem_t; /* libzmq's, on POSIX */
static int (*p_poll)(zmq_pollitem_t *, int, long);

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
            h->next = orphans;
            orphans = h;
        }
    }
    while (done) {
        hint_t *h = done;
        done = h->next;
        destroy(h);
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
            h->next = orphans;
            orphans = h;
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
    void *version = dlsym(lib, "zmq_version"), *getsockopt_fn = dlsym(lib, "zmq_getsockopt");
    void *poll_fn = dlsym(lib, "zmq_poll");
    if (!init_data || !msg_send || !msg_close || !errno_fn || !version || !getsockopt_fn ||
        !poll_fn) {
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
    *(void **)&p_getsockopt = getsockopt_fn;
    *(void **)&p_poll = poll_fn;
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
    hint_t *h = (hint_t *)PyMem_RawCalloc(1, sizeof(hint_t));
    if (!h) return PyErr_NoMemory();
    if (PyObject_GetBuffer(obj, &h->view, PyBUF_C_CONTIGUOUS) < 0) {
        PyMem_RawFree(h);
        return NULL;
    }
    if (sem_init(&h->sem, 0, 0) != 0) {
        PyBuffer_Release(&h->view);
        PyMem_RawFree(h);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    zmq_msg_t msg;
    if (p_init_data(&msg, h->view.buf, (size_t)h->view.len, on_free, h) != 0) {
        int err = p_errno();
        destroy(h);
        return Py_BuildValue("(iO)", err ? err : ENOMEM, Py_None);
    }
    int rc, err = 0;
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
        p_msg_close(&msg); /* calls on_free: nothing was sent */
        if (is_done(h)) {
            destroy(h);
        } else { /* cannot happen with libzmq, but never free what ZeroMQ may hold */
            h->next = orphans;
            orphans = h;
        }
        if (err == -1) return NULL; /* the signal handler's exception */
        return Py_BuildValue("(iO)", err ? err : EIO, Py_None);
    }
    SentObject *s = PyObject_New(SentObject, &SentType);
    if (!s) { /* the message is out: the buffer must stay pinned until it is released */
        h->next = orphans;
        orphans = h;
        return NULL;
    }
    s->h = h;
    return Py_BuildValue("(iN)", 0, (PyObject *)s);
}

/* ZMQ_EVENTS of a socket: what pyzmq's Socket.get(zmq.EVENTS) returns, without the
 * option-enum lookup pyzmq does on every call (the receive loop asks once per message).
 * The caller owns the socket (not closed, used by this thread only). */
static PyObject *py_events(PyObject *self, PyObject *arg) {
    (void)self;
    unsigned long long sock = PyLong_AsUnsignedLongLong(arg);
    if (sock == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (!usable(sock, p_getsockopt != NULL)) return NULL;
    int events = 0;
    size_t size = sizeof events;
    while (p_getsockopt((void *)(uintptr_t)sock, 15 /* ZMQ_EVENTS */, &events, &size) != 0) {
        int err = p_errno();
        if (err != EINTR) return PyLong_FromLong(-(long)(err ? err : EIO));
        if (PyErr_CheckSignals() < 0) return NULL; /* a signal cut it short: ask again, as pyzmq does */
        size = sizeof events;
    }
    return PyLong_FromLong(events);
}

/* Wait up to timeout_ms for a message on one socket (zmq_poll, GIL released): 1 when
 * one is there, 0 when none came (or a signal cut the wait short), -errno on an error.
 * pyzmq's Poller does the same with a Python layer around it; the receive loop waits
 * once per message. The caller owns the socket. */
static PyObject *py_poll_in(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long sock;
    long timeout_ms;
    if (!PyArg_ParseTuple(args, "Kl", &sock, &timeout_ms)) return NULL;
    if (!usable(sock, p_poll != NULL)) return NULL;
    zmq_pollitem_t item = {(void *)(uintptr_t)sock, 0, 1 /* ZMQ_POLLIN */, 0};
    int rc, err = 0;
    Py_BEGIN_ALLOW_THREADS;
    rc = p_poll(&item, 1, timeout_ms);
    err = rc < 0 ? p_errno() : 0;
    Py_END_ALLOW_THREADS;
    if (rc < 0) {
        if (err == EINTR) {
            if (PyErr_CheckSignals() < 0) return NULL;
            return PyLong_FromLong(0);
        }
        return PyLong_FromLong(-(long)(err ? err : EIO));
    }
    return PyLong_FromLong(rc > 0 && (item.revents & 1) ? 1 : 0);
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
    {"events", py_events, METH_O,
     "events(socket_address) -> int: the socket's ZMQ_EVENTS, or -errno"},
    {"poll_in", py_poll_in, METH_VARARGS,
     "poll_in(socket_address, timeout_ms) -> 1 if a message is there, 0 if none came, or -errno"},
    {"orphans", py_pending, METH_NOARGS,
     "orphans() -> int: frames still held by ZeroMQ whose Sent object is gone"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "hefl._zsend",
                                    "Zero-copy ZeroMQ sends with a direct completion wake-up.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__zsend(void) {
    if (PyType_Ready(&SentType) < 0) return NULL;
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
