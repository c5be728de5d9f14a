/* hefl._zsend: zero-copy ZeroMQ sends whose completion wakes the sender directly.
 *
 * pyzmq tells a sender that ZeroMQ has released a zero-copy buffer through a garbage
 * collector thread: libzmq's I/O thread hands the buffer's key to a Python thread,
 * which sets a threading.Event, which wakes the sender. hefl's send waits for that on
 * every large array (the caller may modify its array once send returns), so each such
 * send paid three thread wake-ups and a GIL hand-off. Here libzmq's free callback posts
 * a semaphore the sender waits on with the GIL released: one wake-up, no Python thread.
 *
 * The functions come from the libzmq that pyzmq already loaded (found among the loaded
 * objects, never loaded anew); where exactly one such library is not found, bind()
 * fails and hefl keeps pyzmq's own tracked sends. Nothing here touches Python objects
 * from libzmq's thread: the callback only posts the semaphore and sets a flag; buffers
 * are released by Python code, with the GIL, once the flag is set.
 */
#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <Python.h>

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
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
static void (*p_version)(int *, int *, int *);

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
    sem_post(&h->sem);
    __atomic_store_n(&h->done, 1, __ATOMIC_RELEASE); /* last touch of h from this thread */
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
    hint_t **pp = &orphans;
    while (*pp) {
        hint_t *h = *pp;
        if (is_done(h)) {
            *pp = h->next;
            destroy(h);
        } else {
            pp = &h->next;
        }
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
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (timeout < 0) timeout = 0;
    time_t whole = (time_t)timeout;
    long ns = ts.tv_nsec + (long)((timeout - (double)whole) * 1e9);
    ts.tv_sec += whole + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    int rc, err = 0;
    Py_BEGIN_ALLOW_THREADS;
    do {
        rc = sem_timedwait(&h->sem, &ts);
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

struct found {
    char path[4096];
    int count;
};

static int find_cb(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct found *f = (struct found *)data;
    const char *name = info->dlpi_name;
    if (!name || !*name) return 0;
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    if (strncmp(base, "libzmq", 6) == 0 && (base[6] == '.' || base[6] == '-')) {
        f->count++;
        strncpy(f->path, name, sizeof(f->path) - 1);
    }
    return 0;
}

static PyObject *py_bind(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    struct found f;
    memset(&f, 0, sizeof(f));
    dl_iterate_phdr(find_cb, &f);
    if (f.count != 1) {
        PyErr_Format(PyExc_OSError, "%d loaded libzmq libraries (import zmq first; need exactly one)",
                     f.count);
        return NULL;
    }
    void *lib = dlopen(f.path, RTLD_NOW | RTLD_NOLOAD);
    if (!lib) {
        PyErr_Format(PyExc_OSError, "cannot reopen %s: %s", f.path, dlerror());
        return NULL;
    }
    *(void **)&p_init_data = dlsym(lib, "zmq_msg_init_data");
    *(void **)&p_msg_send = dlsym(lib, "zmq_msg_send");
    *(void **)&p_msg_close = dlsym(lib, "zmq_msg_close");
    *(void **)&p_errno = dlsym(lib, "zmq_errno");
    *(void **)&p_version = dlsym(lib, "zmq_version");
    dlclose(lib); /* RTLD_NOLOAD took a reference; pyzmq keeps the library loaded */
    if (!p_init_data || !p_msg_send || !p_msg_close || !p_errno || !p_version) {
        p_init_data = NULL;
        PyErr_Format(PyExc_OSError, "%s lacks the zmq_msg functions", f.path);
        return NULL;
    }
    int major, minor, patch;
    p_version(&major, &minor, &patch);
    if (major != 4 || minor < 1) { /* zmq_msg_t is 64 bytes from 4.1 on */
        p_init_data = NULL;
        PyErr_Format(PyExc_OSError, "libzmq %d.%d.%d: need 4.1 or later", major, minor, patch);
        return NULL;
    }
    return Py_BuildValue("(s(iii))", f.path, major, minor, patch);
}

static PyObject *py_send(PyObject *self, PyObject *args) {
    (void)self;
    unsigned long long sock;
    PyObject *obj;
    int flags;
    if (!PyArg_ParseTuple(args, "KOi", &sock, &obj, &flags)) return NULL;
    if (!p_init_data) {
        PyErr_SetString(PyExc_RuntimeError, "hefl._zsend is not bound (call bind() first)");
        return NULL;
    }
    if (!sock) {
        PyErr_SetString(PyExc_ValueError, "null socket");
        return NULL;
    }
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
    Py_BEGIN_ALLOW_THREADS;
    rc = p_msg_send(&msg, (void *)(uintptr_t)sock, flags);
    if (rc < 0) {
        err = p_errno();
        p_msg_close(&msg); /* calls on_free: nothing was sent */
    }
    Py_END_ALLOW_THREADS;
    if (rc < 0) {
        if (is_done(h)) {
            destroy(h);
        } else { /* cannot happen with libzmq, but never free what ZeroMQ may hold */
            h->next = orphans;
            orphans = h;
        }
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

static PyObject *py_pending(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    sweep_orphans();
    long n = 0;
    for (hint_t *h = orphans; h; h = h->next) n++;
    return PyLong_FromLong(n);
}

static PyMethodDef methods[] = {
    {"bind", py_bind, METH_NOARGS,
     "bind() -> (path, version): use the libzmq pyzmq loaded; OSError where that is not clear"},
    {"send", py_send, METH_VARARGS,
     "send(socket_address, buffer, flags) -> (errno, Sent or None): one zero-copy frame"},
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
