/*
 * hefl._native: batched big-integer kernels for the Paillier family on the CPU, on GMP.
 *
 * Every function takes numbers as C-contiguous little-endian uint64 limb buffers
 * (N rows of L limbs), writes into a caller-provided output buffer, and releases the
 * GIL while it computes, so Python can split a batch over threads.
 * Inputs are trusted to be reduced by the caller (hefl/he/_cpu.py checks shapes and
 * ranges); nothing here parses data received from a peer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <gmp.h>
#include <string.h>
#include <stdint.h>

static inline void load(mpz_t z, const uint64_t *p, Py_ssize_t L) {
    mpz_import(z, (size_t)L, -1, 8, 0, 0, p);
}

static inline void store(uint64_t *p, Py_ssize_t L, const mpz_t z) {
    size_t cnt = 0;
    memset(p, 0, (size_t)L * 8);
    /* callers guarantee 0 <= z < 2^(64 L) */
    mpz_export(p, &cnt, -1, 8, 0, 0, z);
}

static int check_buf(Py_buffer *b, Py_ssize_t need, const char *name) {
    if (b->len < need) {
        PyErr_Format(PyExc_ValueError, "buffer %s too small: %zd bytes < %zd", name, b->len, need);
        return 0;
    }
    return 1;
}

/* mulmod(a, b, m, out, L): out[i] = a[i] * b[i] mod m */
static PyObject *py_mulmod(PyObject *self, PyObject *args) {
    Py_buffer a, b, m, out; Py_ssize_t L;
    if (!PyArg_ParseTuple(args, "y*y*y*w*n", &a, &b, &m, &out, &L)) return NULL;
    Py_ssize_t N = a.len / (8 * L);
    PyObject *res = NULL;
    if (!check_buf(&b, N * 8 * L, "b") || !check_buf(&out, N * 8 * L, "out") || !check_buf(&m, 8 * L, "m")) goto done;
    Py_BEGIN_ALLOW_THREADS
    mpz_t x, y, mod; mpz_inits(x, y, mod, NULL);
    load(mod, (const uint64_t *)m.buf, L);
    for (Py_ssize_t i = 0; i < N; i++) {
        load(x, (const uint64_t *)a.buf + i * L, L);
        load(y, (const uint64_t *)b.buf + i * L, L);
        mpz_mul(x, x, y); mpz_mod(x, x, mod);
        store((uint64_t *)out.buf + i * L, L, x);
    }
    mpz_clears(x, y, mod, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&a); PyBuffer_Release(&b); PyBuffer_Release(&m); PyBuffer_Release(&out);
    return res;
}

/* powmod(a, L, e, Le, m, out): out[i] = a[i] ^ e[i] mod m  (e rows of Le limbs) */
static PyObject *py_powmod(PyObject *self, PyObject *args) {
    Py_buffer a, e, m, out; Py_ssize_t L, Le;
    if (!PyArg_ParseTuple(args, "y*ny*ny*w*", &a, &L, &e, &Le, &m, &out)) return NULL;
    Py_ssize_t N = a.len / (8 * L);
    PyObject *res = NULL;
    if (!check_buf(&e, N * 8 * Le, "e") || !check_buf(&out, N * 8 * L, "out") || !check_buf(&m, 8 * L, "m")) goto done;
    Py_BEGIN_ALLOW_THREADS
    mpz_t x, y, mod; mpz_inits(x, y, mod, NULL);
    load(mod, (const uint64_t *)m.buf, L);
    for (Py_ssize_t i = 0; i < N; i++) {
        load(x, (const uint64_t *)a.buf + i * L, L);
        load(y, (const uint64_t *)e.buf + i * Le, Le);
        mpz_powm(x, x, y, mod);
        store((uint64_t *)out.buf + i * L, L, x);
    }
    mpz_clears(x, y, mod, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&a); PyBuffer_Release(&e); PyBuffer_Release(&m); PyBuffer_Release(&out);
    return res;
}

/*
 * fb_powmod(table, w, nwin, e, Le, m, out, L): fixed-base exponentiation.
 * table[i * 2^w + d] = base^(d * 2^(w i)) mod m, i < nwin; e rows of Le limbs with
 * bit length <= w * nwin.  out[i] = prod_i table[i][digit_i(e)] mod m.
 */
static PyObject *py_fb_powmod(PyObject *self, PyObject *args) {
    Py_buffer t, e, m, out; Py_ssize_t w, nwin, Le, L;
    if (!PyArg_ParseTuple(args, "y*nny*ny*w*n", &t, &w, &nwin, &e, &Le, &m, &out, &L)) return NULL;
    Py_ssize_t N = e.len / (8 * Le);
    Py_ssize_t tsize = ((Py_ssize_t)1 << w);
    PyObject *res = NULL;
    if (w < 1 || w > 16) { PyErr_SetString(PyExc_ValueError, "window must be in [1, 16]"); goto done; }
    if (!check_buf(&t, nwin * tsize * 8 * L, "table") || !check_buf(&out, N * 8 * L, "out") || !check_buf(&m, 8 * L, "m")) goto done;
    if (w * nwin < 64 * Le) {
        /* exponents may have more bits than the table covers: refuse rather than truncate */
        const uint64_t *ep = (const uint64_t *)e.buf;
        for (Py_ssize_t i = 0; i < N; i++) {
            for (Py_ssize_t bit = w * nwin; bit < 64 * Le; bit++) {
                if ((ep[i * Le + bit / 64] >> (bit % 64)) & 1) {
                    PyErr_SetString(PyExc_ValueError, "exponent larger than the fixed-base table");
                    goto done;
                }
            }
        }
    }
    Py_BEGIN_ALLOW_THREADS
    mpz_t acc, y, mod; mpz_inits(acc, y, mod, NULL);
    load(mod, (const uint64_t *)m.buf, L);
    const uint64_t *tb = (const uint64_t *)t.buf;
    for (Py_ssize_t i = 0; i < N; i++) {
        const uint64_t *ei = (const uint64_t *)e.buf + i * Le;
        int started = 0;
        for (Py_ssize_t win = 0; win < nwin; win++) {
            Py_ssize_t bit = win * w;
            if (bit >= 64 * Le) break;
            Py_ssize_t limb = bit / 64, off = bit % 64;
            uint64_t d = ei[limb] >> off;
            if (off + w > 64 && limb + 1 < Le) d |= ei[limb + 1] << (64 - off);
            d &= (uint64_t)(tsize - 1);
            if (!d) continue;
            const uint64_t *entry = tb + ((size_t)win * tsize + d) * L;
            if (!started) { load(acc, entry, L); started = 1; }
            else { load(y, entry, L); mpz_mul(acc, acc, y); mpz_mod(acc, acc, mod); }
        }
        if (!started) mpz_set_ui(acc, 1);
        store((uint64_t *)out.buf + i * L, L, acc);
    }
    mpz_clears(acc, y, mod, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&t); PyBuffer_Release(&e); PyBuffer_Release(&m); PyBuffer_Release(&out);
    return res;
}

/* encrypt(m, Ln, obf, n, nsq, out, Lc): out[i] = (1 + m[i] n) * obf[i] mod n^2 */
static PyObject *py_encrypt(PyObject *self, PyObject *args) {
    Py_buffer mb, ob, nb, nsb, out; Py_ssize_t Ln, Lc;
    if (!PyArg_ParseTuple(args, "y*ny*y*y*w*n", &mb, &Ln, &ob, &nb, &nsb, &out, &Lc)) return NULL;
    Py_ssize_t N = mb.len / (8 * Ln);
    PyObject *res = NULL;
    if (!check_buf(&ob, N * 8 * Lc, "obf") || !check_buf(&out, N * 8 * Lc, "out")) goto done;
    Py_BEGIN_ALLOW_THREADS
    mpz_t x, r, n, nsq; mpz_inits(x, r, n, nsq, NULL);
    load(n, (const uint64_t *)nb.buf, Ln);
    load(nsq, (const uint64_t *)nsb.buf, Lc);
    for (Py_ssize_t i = 0; i < N; i++) {
        load(x, (const uint64_t *)mb.buf + i * Ln, Ln);
        load(r, (const uint64_t *)ob.buf + i * Lc, Lc);
        mpz_mul(x, x, n); mpz_add_ui(x, x, 1);  /* < n^2 since m < n */
        mpz_mul(x, x, r); mpz_mod(x, x, nsq);
        store((uint64_t *)out.buf + i * Lc, Lc, x);
    }
    mpz_clears(x, r, n, nsq, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&mb); PyBuffer_Release(&ob); PyBuffer_Release(&nb); PyBuffer_Release(&nsb); PyBuffer_Release(&out);
    return res;
}

/* bucket_prod(a, ids, F, nb, m, out, L): out[f, b] = prod_{i: ids[i,f]==b} a[i] mod m */
static PyObject *py_bucket_prod(PyObject *self, PyObject *args) {
    Py_buffer a, ids, m, out; Py_ssize_t F, NB, L;
    if (!PyArg_ParseTuple(args, "y*y*nny*w*n", &a, &ids, &F, &NB, &m, &out, &L)) return NULL;
    Py_ssize_t N = a.len / (8 * L);
    PyObject *res = NULL;
    mpz_t *acc = NULL; char *used = NULL;
    if (!check_buf(&ids, N * F * 4, "ids") || !check_buf(&out, F * NB * 8 * L, "out") || !check_buf(&m, 8 * L, "m")) goto done;
    acc = (mpz_t *)PyMem_RawMalloc(sizeof(mpz_t) * (size_t)(F * NB));
    used = (char *)PyMem_RawCalloc((size_t)(F * NB), 1);
    if (!acc || !used) { PyErr_NoMemory(); goto done; }
    const int32_t *id = (const int32_t *)ids.buf;
    for (Py_ssize_t i = 0; i < N * F; i++) {
        if (id[i] >= NB) { PyErr_Format(PyExc_ValueError, "bucket id %d out of range [0, %zd)", id[i], NB); goto done; }
    }
    Py_BEGIN_ALLOW_THREADS
    mpz_t x, mod; mpz_inits(x, mod, NULL);
    load(mod, (const uint64_t *)m.buf, L);
    for (Py_ssize_t k = 0; k < F * NB; k++) mpz_init2(acc[k], (mp_bitcnt_t)(128 * L));
    for (Py_ssize_t i = 0; i < N; i++) {
        load(x, (const uint64_t *)a.buf + i * L, L);
        for (Py_ssize_t f = 0; f < F; f++) {
            int32_t b = id[i * F + f];
            if (b < 0) continue;
            Py_ssize_t k = f * NB + b;
            if (!used[k]) { mpz_set(acc[k], x); used[k] = 1; }
            else { mpz_mul(acc[k], acc[k], x); mpz_mod(acc[k], acc[k], mod); }
        }
    }
    for (Py_ssize_t k = 0; k < F * NB; k++) {
        if (!used[k]) mpz_set_ui(acc[k], 1);
        store((uint64_t *)out.buf + k * L, L, acc[k]);
        mpz_clear(acc[k]);
    }
    mpz_clears(x, mod, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    if (acc) PyMem_RawFree(acc);
    if (used) PyMem_RawFree(used);
    PyBuffer_Release(&a); PyBuffer_Release(&ids); PyBuffer_Release(&m); PyBuffer_Release(&out);
    return res;
}

/*
 * decrypt(c, Lc, p, q, hp, hq, qinv, out, Ln, Lh): CRT decryption of g = n + 1 Paillier.
 * mp = L_p(c^(p-1) mod p^2) hp mod p,  mq likewise,  m = mq + q ((mp - mq) qinv mod p).
 * p, q, hp, hq, qinv are Lh-limb numbers.
 */
static PyObject *py_decrypt(PyObject *self, PyObject *args) {
    Py_buffer c, pb, qb, hpb, hqb, qib, out; Py_ssize_t Lc, Ln, Lh;
    if (!PyArg_ParseTuple(args, "y*ny*y*y*y*y*w*nn", &c, &Lc, &pb, &qb, &hpb, &hqb, &qib, &out, &Ln, &Lh)) return NULL;
    Py_ssize_t N = c.len / (8 * Lc);
    PyObject *res = NULL;
    if (!check_buf(&out, N * 8 * Ln, "out")) goto done;
    Py_BEGIN_ALLOW_THREADS
    mpz_t x, y, p, q, p2, q2, pm1, qm1, hp, hq, qinv, mp, mq;
    mpz_inits(x, y, p, q, p2, q2, pm1, qm1, hp, hq, qinv, mp, mq, NULL);
    load(p, (const uint64_t *)pb.buf, Lh); load(q, (const uint64_t *)qb.buf, Lh);
    load(hp, (const uint64_t *)hpb.buf, Lh); load(hq, (const uint64_t *)hqb.buf, Lh);
    load(qinv, (const uint64_t *)qib.buf, Lh);
    mpz_mul(p2, p, p); mpz_mul(q2, q, q);
    mpz_sub_ui(pm1, p, 1); mpz_sub_ui(qm1, q, 1);
    for (Py_ssize_t i = 0; i < N; i++) {
        load(x, (const uint64_t *)c.buf + i * Lc, Lc);
        mpz_mod(y, x, p2); mpz_powm(y, y, pm1, p2); mpz_sub_ui(y, y, 1); mpz_divexact(y, y, p);
        mpz_mul(y, y, hp); mpz_mod(mp, y, p);
        mpz_mod(y, x, q2); mpz_powm(y, y, qm1, q2); mpz_sub_ui(y, y, 1); mpz_divexact(y, y, q);
        mpz_mul(y, y, hq); mpz_mod(mq, y, q);
        mpz_sub(y, mp, mq); mpz_mul(y, y, qinv); mpz_mod(y, y, p);
        mpz_mul(y, y, q); mpz_add(y, y, mq);
        store((uint64_t *)out.buf + i * Ln, Ln, y);
    }
    mpz_clears(x, y, p, q, p2, q2, pm1, qm1, hp, hq, qinv, mp, mq, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&c); PyBuffer_Release(&pb); PyBuffer_Release(&qb); PyBuffer_Release(&hpb);
    PyBuffer_Release(&hqb); PyBuffer_Release(&qib); PyBuffer_Release(&out);
    return res;
}

/* crt(xp, Lp, xq, Lq, p2, q2, q2inv, out, L): out = xq + q2 ((xp - xq) q2inv mod p2) */
static PyObject *py_crt(PyObject *self, PyObject *args) {
    Py_buffer xp, xq, p2b, q2b, qib, out; Py_ssize_t Lp, Lq, L;
    if (!PyArg_ParseTuple(args, "y*ny*ny*y*y*w*n", &xp, &Lp, &xq, &Lq, &p2b, &q2b, &qib, &out, &L)) return NULL;
    Py_ssize_t N = xp.len / (8 * Lp);
    PyObject *res = NULL;
    if (!check_buf(&xq, N * 8 * Lq, "xq") || !check_buf(&out, N * 8 * L, "out")) goto done;
    Py_BEGIN_ALLOW_THREADS
    mpz_t a, b, p2, q2, qi; mpz_inits(a, b, p2, q2, qi, NULL);
    load(p2, (const uint64_t *)p2b.buf, Lp); load(q2, (const uint64_t *)q2b.buf, Lq);
    load(qi, (const uint64_t *)qib.buf, Lp);
    for (Py_ssize_t i = 0; i < N; i++) {
        load(a, (const uint64_t *)xp.buf + i * Lp, Lp);
        load(b, (const uint64_t *)xq.buf + i * Lq, Lq);
        mpz_sub(a, a, b); mpz_mul(a, a, qi); mpz_mod(a, a, p2);
        mpz_mul(a, a, q2); mpz_add(a, a, b);
        store((uint64_t *)out.buf + i * L, L, a);
    }
    mpz_clears(a, b, p2, q2, qi, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&xp); PyBuffer_Release(&xq); PyBuffer_Release(&p2b); PyBuffer_Release(&q2b);
    PyBuffer_Release(&qib); PyBuffer_Release(&out);
    return res;
}

/*
 * check_range(a, L, n, Ln, top): index of the first row not in [1, top) or not coprime
 * to n, else -1.  Coprimality is checked for the whole batch with one gcd: the product
 * of the rows mod n shares a factor with n exactly when some row does; only then are
 * rows checked one by one to name the first bad one.
 */
static PyObject *py_check_range(PyObject *self, PyObject *args) {
    Py_buffer a, nb, nsb; Py_ssize_t L, Ln;
    if (!PyArg_ParseTuple(args, "y*ny*ny*", &a, &L, &nb, &Ln, &nsb)) return NULL;
    Py_ssize_t N = a.len / (8 * L), bad = -1;
    Py_BEGIN_ALLOW_THREADS
    mpz_t x, g, n, top, prod; mpz_inits(x, g, n, top, prod, NULL);
    load(n, (const uint64_t *)nb.buf, Ln); load(top, (const uint64_t *)nsb.buf, L);
    mpz_set_ui(prod, 1);
    for (Py_ssize_t i = 0; i < N; i++) {
        load(x, (const uint64_t *)a.buf + i * L, L);
        if (mpz_sgn(x) <= 0 || mpz_cmp(x, top) >= 0) { bad = i; break; }
        mpz_mod(x, x, n);
        mpz_mul(prod, prod, x); mpz_mod(prod, prod, n);
    }
    if (bad < 0 && N > 0) {
        mpz_gcd(g, prod, n);
        if (mpz_cmp_ui(g, 1) != 0) {
            for (Py_ssize_t i = 0; i < N; i++) {
                load(x, (const uint64_t *)a.buf + i * L, L);
                mpz_gcd(g, x, n);
                if (mpz_cmp_ui(g, 1) != 0) { bad = i; break; }
            }
        }
    }
    mpz_clears(x, g, n, top, prod, NULL);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&a); PyBuffer_Release(&nb); PyBuffer_Release(&nsb);
    return PyLong_FromSsize_t(bad);
}

/*
 * first_outside(a, L, top) -> index of the first row of a (N x L little-endian uint64
 * limbs, uint64-aligned) that is 0 or >= top (L limbs), or -1. The range check of every
 * received ciphertext: one pass, nearly every row decided by its top limb (numpy needs a
 * strided pass per limb and several temporaries).
 */
static PyObject *py_first_outside(PyObject *self, PyObject *args) {
    Py_buffer a, t; Py_ssize_t L;
    if (!PyArg_ParseTuple(args, "y*ny*", &a, &L, &t)) return NULL;
    if (L <= 0 || L > PY_SSIZE_T_MAX / 8 || t.len != 8 * L || a.len % (8 * L) != 0) {
        PyBuffer_Release(&a); PyBuffer_Release(&t);
        PyErr_SetString(PyExc_ValueError, "first_outside: rows and top must have L limbs");
        return NULL;
    }
    Py_ssize_t N = a.len / (8 * L), bad = -1;
    const uint64_t *x = (const uint64_t *)a.buf, *m = (const uint64_t *)t.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < N; i++) {
        const uint64_t *r = x + i * L;
        Py_ssize_t j = L - 1;
        while (j >= 0 && r[j] == m[j]) j--;
        if (j < 0 || r[j] > m[j]) { bad = i; break; } /* >= top */
        Py_ssize_t k = L - 1;                          /* below top: is it 0? */
        while (k >= 0 && r[k] == 0) k--;
        if (k < 0) { bad = i; break; }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&a); PyBuffer_Release(&t);
    return PyLong_FromSsize_t(bad);
}

/* ------------------------------------------------------------------------------------
 * Okamoto–Uchiyama kernels (hefl/he/_ou_cpu.py).  They work on mpn limbs directly
 * (no mpz import/export per multiplication), so they need 64-bit GMP limbs; where GMP
 * has other limbs they are not registered and hefl falls back to gmpy2 for OU.
 * ------------------------------------------------------------------------------------ */
#if GMP_LIMB_BITS == 64 && GMP_NAIL_BITS == 0
#define HEFL_OU_KERNELS 1

/* bits [off, off + w) of the Le-limb number e, w <= 16 */
static inline uint64_t ou_bits(const uint64_t *e, Py_ssize_t Le, Py_ssize_t off, Py_ssize_t w) {
    Py_ssize_t limb = off / 64, sh = off % 64;
    if (limb >= Le) return 0;
    uint64_t d = e[limb] >> sh;
    if (sh + w > 64 && limb + 1 < Le) d |= e[limb + 1] << (64 - sh);
    return d & (((uint64_t)1 << w) - 1);
}

/* 1 when e (Le limbs) has a bit set at position >= cover */
static inline int ou_exceeds(const uint64_t *e, Py_ssize_t Le, Py_ssize_t cover) {
    Py_ssize_t limb = cover / 64, sh = cover % 64;
    if (limb >= Le) return 0;
    if (sh && (e[limb] >> sh)) return 1;
    for (Py_ssize_t j = sh ? limb + 1 : limb; j < Le; j++) if (e[j]) return 1;
    return 0;
}

/* levels: int64 triplets (bit offset, window, first row of that level in the table),
 * contiguous from bit 0; returns the number of exponent bits they cover, or -1 */
static Py_ssize_t ou_levels(Py_buffer *lev, Py_ssize_t *nlev) {
    const int64_t *l = (const int64_t *)lev->buf;
    *nlev = lev->len / 24;
    Py_ssize_t cover = 0;
    for (Py_ssize_t i = 0; i < *nlev; i++) {
        if (l[3 * i] != cover || l[3 * i + 1] < 1 || l[3 * i + 1] > 16 || l[3 * i + 2] < 0) return -1;
        cover += (Py_ssize_t)l[3 * i + 1];
    }
    return cover;
}

/* acc <- acc * b mod m (L limbs each; tmp 2L limbs, q L + 1 limbs) */
static inline void ou_mulmod(mp_limb_t *acc, const mp_limb_t *b, const mp_limb_t *m, Py_ssize_t L,
                             mp_limb_t *tmp, mp_limb_t *q) {
    mpn_mul_n(tmp, acc, b, (mp_size_t)L);
    mpn_tdiv_qr(q, acc, 0, tmp, (mp_size_t)(2 * L), m, (mp_size_t)L);
}

/* -m^-1 mod 2^64 for odd m0 (Newton: each step doubles the correct low bits) */
static inline mp_limb_t ou_minv(mp_limb_t m0) {
    mp_limb_t inv = m0;  /* correct to 3 bits for odd m0 */
    for (int i = 0; i < 5; i++) inv *= 2 - m0 * inv;
    return (mp_limb_t)0 - inv;
}

/* GMP's own REDC (exported as __gmpn_redc_1 by every GMP since 5.0, not in gmp.h): used
 * when the library has it, else the word-by-word loop below */
extern mp_limb_t __gmpn_redc_1(mp_ptr, mp_ptr, mp_srcptr, mp_size_t, mp_limb_t) __attribute__((weak));

/* Montgomery step: acc <- acc * b * 2^(-64 L) mod m (tmp 2L limbs; m odd; acc, b < m) */
static inline void ou_montmul(mp_limb_t *acc, const mp_limb_t *b, const mp_limb_t *m, Py_ssize_t L,
                              mp_limb_t *tmp, mp_limb_t minv) {
    mp_limb_t cy;
    mpn_mul_n(tmp, acc, b, (mp_size_t)L);
    if (__gmpn_redc_1) {
        cy = __gmpn_redc_1(acc, tmp, m, (mp_size_t)L, minv);
    } else {
        /* word-by-word REDC; the carry of row i is parked in the limb it just cleared */
        for (Py_ssize_t i = 0; i < L; i++) tmp[i] = mpn_addmul_1(tmp + i, m, (mp_size_t)L, tmp[i] * minv);
        cy = mpn_add_n(acc, tmp + L, tmp, (mp_size_t)L);
    }
    if (cy || mpn_cmp(acc, m, (mp_size_t)L) >= 0) mpn_sub_n(acc, acc, m, (mp_size_t)L);
}

/* multiply the level entries selected by exponent e into acc; *k counts the multiplications
 * (Montgomery steps when minv != 0, each leaving a factor 2^(-64 L) to undo at the end) */
static inline void ou_walk(mp_limb_t *acc, int *started, Py_ssize_t *k, const uint64_t *tab, const int64_t *lev,
                           Py_ssize_t nlev, const uint64_t *e, Py_ssize_t Le, const mp_limb_t *m,
                           Py_ssize_t L, mp_limb_t *tmp, mp_limb_t *q, mp_limb_t minv) {
    for (Py_ssize_t j = 0; j < nlev; j++) {
        uint64_t d = ou_bits(e, Le, (Py_ssize_t)lev[3 * j], (Py_ssize_t)lev[3 * j + 1]);
        if (!d) continue;
        const mp_limb_t *entry = (const mp_limb_t *)tab + ((size_t)lev[3 * j + 2] + d) * (size_t)L;
        if (!*started) { memcpy(acc, entry, (size_t)L * 8); *started = 1; }
        else if (minv) { ou_montmul(acc, entry, m, L, tmp, minv); (*k)++; }
        else ou_mulmod(acc, entry, m, L, tmp, q);
    }
}

/*
 * fbt_prod(init, Li, t1, lev1, e1, Le1, t2, t2n, lev2, e2, Le2, neg, m, rk, out, L):
 *   out[i] = init[i] * T1(e1[i]) * (neg[i] ? T2n : T2)(e2[i]) mod m
 * where T(e) = prod over levels (off, w, s) of table[s + digit(e, off, w)], a fixed-base
 * table with level entries base^(d 2^off).  A term whose level list is empty is left
 * out, and so is init when Li == 0; init rows (Li limbs) are reduced mod m first.
 * Exponents with bits beyond the levels' coverage raise ValueError (never truncated).
 * With rk given (rows k = 0..K: R^(k+1) mod m, R = 2^(64 L), m odd, K >= the number of
 * multiplications a row can need) the products are Montgomery steps on the plain table
 * entries, and one last step with rk[k] removes the k factors R^-1; else they are
 * multiply-and-divide.
 */
static PyObject *py_fbt_prod(PyObject *self, PyObject *args) {
    Py_buffer ib, t1, l1, e1, t2, t2n, l2, e2, ng, m, rk, out;
    Py_ssize_t Li, Le1, Le2, L;
    if (!PyArg_ParseTuple(args, "y*ny*y*y*ny*y*y*y*ny*y*y*w*n", &ib, &Li, &t1, &l1, &e1, &Le1, &t2, &t2n, &l2,
                          &e2, &Le2, &ng, &m, &rk, &out, &L))
        return NULL;
    PyObject *res = NULL;
    mp_limb_t *work = NULL;
    Py_ssize_t n1, n2, N = L > 0 ? out.len / (8 * L) : 0, bad = -1;
    Py_ssize_t c1 = ou_levels(&l1, &n1), c2 = ou_levels(&l2, &n2);
    if (L < 1 || c1 < 0 || c2 < 0) { PyErr_SetString(PyExc_ValueError, "invalid fixed-base levels"); goto done; }
    if (!check_buf(&m, 8 * L, "m")) goto done;
    if (((const uint64_t *)m.buf)[L - 1] == 0) { PyErr_SetString(PyExc_ValueError, "modulus has a zero top limb"); goto done; }
    if (Li && !check_buf(&ib, N * 8 * Li, "init")) goto done;
    if (n1) {
        const int64_t *l = (const int64_t *)l1.buf;
        if (Le1 < 1 || !check_buf(&e1, N * 8 * Le1, "e1") ||
            !check_buf(&t1, (l[3 * (n1 - 1) + 2] + ((Py_ssize_t)1 << l[3 * (n1 - 1) + 1])) * 8 * L, "t1")) goto done;
    }
    if (n2) {
        const int64_t *l = (const int64_t *)l2.buf;
        Py_ssize_t need = (l[3 * (n2 - 1) + 2] + ((Py_ssize_t)1 << l[3 * (n2 - 1) + 1])) * 8 * L;
        if (Le2 < 1 || !check_buf(&e2, N * 8 * Le2, "e2") || !check_buf(&ng, N, "neg") ||
            !check_buf(&t2, need, "t2") || !check_buf(&t2n, need, "t2n")) goto done;
    }
    if (Li && Li < L) { PyErr_SetString(PyExc_ValueError, "init rows need at least L limbs"); goto done; }
    Py_ssize_t K = rk.len / (8 * L);
    if (K && (K < n1 + n2 + 1 || !(((const uint64_t *)m.buf)[0] & 1))) {
        PyErr_SetString(PyExc_ValueError, "Montgomery correction table too short or even modulus"); goto done;
    }
    work = (mp_limb_t *)PyMem_RawMalloc(sizeof(mp_limb_t) * (size_t)(L + 2 * L + (Li > L ? Li : L) + 1));
    if (!work) { PyErr_NoMemory(); goto done; }
    Py_BEGIN_ALLOW_THREADS
    mp_limb_t *acc = work, *tmp = work + L, *q = work + 3 * L;
    const mp_limb_t *mod = (const mp_limb_t *)m.buf;
    mp_limb_t minv = K ? ou_minv(mod[0]) : 0;
    for (Py_ssize_t i = 0; i < N; i++) {
        int started = 0;
        Py_ssize_t k = 0;
        const uint64_t *x1 = n1 ? (const uint64_t *)e1.buf + i * Le1 : NULL;
        const uint64_t *x2 = n2 ? (const uint64_t *)e2.buf + i * Le2 : NULL;
        if ((n1 && ou_exceeds(x1, Le1, c1)) || (n2 && ou_exceeds(x2, Le2, c2))) { bad = i; break; }
        if (Li) {
            mpn_tdiv_qr(q, acc, 0, (const mp_limb_t *)ib.buf + i * Li, (mp_size_t)Li, mod, (mp_size_t)L);
            started = 1;
        }
        if (n1) ou_walk(acc, &started, &k, (const uint64_t *)t1.buf, (const int64_t *)l1.buf, n1, x1, Le1, mod, L,
                        tmp, q, minv);
        if (n2) {
            const uint64_t *tb = ((const uint8_t *)ng.buf)[i] ? (const uint64_t *)t2n.buf : (const uint64_t *)t2.buf;
            ou_walk(acc, &started, &k, tb, (const int64_t *)l2.buf, n2, x2, Le2, mod, L, tmp, q, minv);
        }
        if (!started) { memset(acc, 0, (size_t)L * 8); acc[0] = 1; }
        else if (k) ou_montmul(acc, (const mp_limb_t *)rk.buf + (size_t)k * (size_t)L, mod, L, tmp, minv);
        memcpy((uint64_t *)out.buf + i * L, acc, (size_t)L * 8);
    }
    Py_END_ALLOW_THREADS
    if (bad >= 0) {
        PyErr_Format(PyExc_ValueError, "exponent of row %zd larger than the fixed-base table", bad);
        goto done;
    }
    res = Py_None; Py_INCREF(res);
done:
    if (work) PyMem_RawFree(work);
    PyBuffer_Release(&ib); PyBuffer_Release(&t1); PyBuffer_Release(&l1); PyBuffer_Release(&e1);
    PyBuffer_Release(&t2); PyBuffer_Release(&t2n); PyBuffer_Release(&l2); PyBuffer_Release(&e2);
    PyBuffer_Release(&ng); PyBuffer_Release(&m); PyBuffer_Release(&rk); PyBuffer_Release(&out);
    return res;
}

/*
 * signed_mag(x, Lx, n, mag, Lm, neg, maxbits) -> first bad row or -1.
 * Residues x in [0, n) stand for signed values (n - |v| for v < 0, as FixedPointEncoder
 * writes them): mag[i] = |v| in Lm limbs, neg[i] = v < 0.  A row is bad when x >= n or
 * |v| has more than maxbits bits.
 */
static PyObject *py_signed_mag(PyObject *self, PyObject *args) {
    Py_buffer xb, nb, mb, gb; Py_ssize_t Lx, Lm, maxbits;
    if (!PyArg_ParseTuple(args, "y*ny*w*nw*n", &xb, &Lx, &nb, &mb, &Lm, &gb, &maxbits)) return NULL;
    Py_ssize_t N = Lx > 0 ? xb.len / (8 * Lx) : 0, bad = -1;
    PyObject *res = NULL;
    mp_limb_t *work = NULL;
    if (Lx < 1 || Lm < 1 || maxbits > 64 * Lm) { PyErr_SetString(PyExc_ValueError, "invalid limb counts"); goto done; }
    if (!check_buf(&nb, 8 * Lx, "n") || !check_buf(&mb, N * 8 * Lm, "mag") || !check_buf(&gb, N, "neg")) goto done;
    work = (mp_limb_t *)PyMem_RawMalloc(sizeof(mp_limb_t) * (size_t)(2 * Lx));
    if (!work) { PyErr_NoMemory(); goto done; }
    Py_BEGIN_ALLOW_THREADS
    const mp_limb_t *n = (const mp_limb_t *)nb.buf;
    mp_limb_t *half = work, *v = work + Lx;
    mpn_rshift(half, n, (mp_size_t)Lx, 1);
    for (Py_ssize_t i = 0; i < N; i++) {
        const mp_limb_t *x = (const mp_limb_t *)xb.buf + i * Lx;
        if (mpn_cmp(x, n, (mp_size_t)Lx) >= 0) { bad = i; break; }
        int negative = mpn_cmp(x, half, (mp_size_t)Lx) > 0;
        if (negative) mpn_sub_n(v, n, x, (mp_size_t)Lx);
        else memcpy(v, x, (size_t)Lx * 8);
        Py_ssize_t top = Lx;
        while (top > 0 && v[top - 1] == 0) top--;
        Py_ssize_t bits = top ? 64 * (top - 1) + (64 - __builtin_clzll(v[top - 1])) : 0;
        if (bits > maxbits) { bad = i; break; }
        uint64_t *o = (uint64_t *)mb.buf + i * Lm;
        memset(o, 0, (size_t)Lm * 8);
        memcpy(o, v, (size_t)(top < Lm ? top : Lm) * 8);
        ((uint8_t *)gb.buf)[i] = (uint8_t)negative;
    }
    Py_END_ALLOW_THREADS
    res = PyLong_FromSsize_t(bad);
done:
    if (work) PyMem_RawFree(work);
    PyBuffer_Release(&xb); PyBuffer_Release(&nb); PyBuffer_Release(&mb); PyBuffer_Release(&gb);
    return res;
}

/*
 * ou_decrypt(c, Lc, p, Lp, p2, Lp2, t, Lt, gpinv, n, out, Ln): Okamoto–Uchiyama decryption
 * with the subgroup order t:  m = L(c^t mod p^2) * gpinv mod p,  L(x) = (x - 1) / p,
 * written as a signed residue mod n (m > p/2 stands for m - p, stored as n - (p - m)).
 */
static PyObject *py_ou_decrypt(PyObject *self, PyObject *args) {
    Py_buffer cb, pb, p2b, tb, gb, nb, out; Py_ssize_t Lc, Lp, Lp2, Lt, Ln;
    if (!PyArg_ParseTuple(args, "y*ny*ny*ny*ny*y*w*n", &cb, &Lc, &pb, &Lp, &p2b, &Lp2, &tb, &Lt, &gb, &nb, &out, &Ln))
        return NULL;
    Py_ssize_t N = Lc > 0 ? cb.len / (8 * Lc) : 0;
    PyObject *res = NULL;
    if (!check_buf(&out, N * 8 * Ln, "out") || !check_buf(&pb, 8 * Lp, "p") || !check_buf(&p2b, 8 * Lp2, "p2") ||
        !check_buf(&tb, 8 * Lt, "t") || !check_buf(&gb, 8 * Lp, "gpinv") || !check_buf(&nb, 8 * Ln, "n")) goto done;
    Py_BEGIN_ALLOW_THREADS
    mpz_t x, p, p2, t, gi, n, half;
    mpz_inits(x, p, p2, t, gi, n, half, NULL);
    load(p, (const uint64_t *)pb.buf, Lp); load(p2, (const uint64_t *)p2b.buf, Lp2);
    load(t, (const uint64_t *)tb.buf, Lt); load(gi, (const uint64_t *)gb.buf, Lp);
    load(n, (const uint64_t *)nb.buf, Ln);
    mpz_fdiv_q_2exp(half, p, 1);
    for (Py_ssize_t i = 0; i < N; i++) {
        load(x, (const uint64_t *)cb.buf + i * Lc, Lc);
        mpz_mod(x, x, p2);
        mpz_powm(x, x, t, p2);
        mpz_sub_ui(x, x, 1);
        mpz_divexact(x, x, p);
        mpz_mul(x, x, gi); mpz_mod(x, x, p);
        if (mpz_cmp(x, half) > 0) { mpz_sub(x, x, p); mpz_add(x, x, n); }
        store((uint64_t *)out.buf + i * Ln, Ln, x);
    }
    mpz_clears(x, p, p2, t, gi, n, half, NULL);
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    PyBuffer_Release(&cb); PyBuffer_Release(&pb); PyBuffer_Release(&p2b); PyBuffer_Release(&tb);
    PyBuffer_Release(&gb); PyBuffer_Release(&nb); PyBuffer_Release(&out);
    return res;
}

/* mulmod_mpn(a, b, m, out, L): as mulmod, on limbs without mpz conversions (m's top limb != 0) */
static PyObject *py_mulmod_mpn(PyObject *self, PyObject *args) {
    Py_buffer a, b, m, out; Py_ssize_t L;
    if (!PyArg_ParseTuple(args, "y*y*y*w*n", &a, &b, &m, &out, &L)) return NULL;
    Py_ssize_t N = L > 0 ? a.len / (8 * L) : 0;
    PyObject *res = NULL;
    mp_limb_t *work = NULL;
    if (L < 1 || !check_buf(&b, N * 8 * L, "b") || !check_buf(&out, N * 8 * L, "out") || !check_buf(&m, 8 * L, "m")) goto done;
    if (((const uint64_t *)m.buf)[L - 1] == 0) { PyErr_SetString(PyExc_ValueError, "modulus has a zero top limb"); goto done; }
    work = (mp_limb_t *)PyMem_RawMalloc(sizeof(mp_limb_t) * (size_t)(3 * L + 1));
    if (!work) { PyErr_NoMemory(); goto done; }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < N; i++) {
        mpn_mul_n(work, (const mp_limb_t *)a.buf + i * L, (const mp_limb_t *)b.buf + i * L, (mp_size_t)L);
        mpn_tdiv_qr(work + 2 * L, (mp_limb_t *)out.buf + i * L, 0, work, (mp_size_t)(2 * L),
                    (const mp_limb_t *)m.buf, (mp_size_t)L);
    }
    Py_END_ALLOW_THREADS
    res = Py_None; Py_INCREF(res);
done:
    if (work) PyMem_RawFree(work);
    PyBuffer_Release(&a); PyBuffer_Release(&b); PyBuffer_Release(&m); PyBuffer_Release(&out);
    return res;
}
#endif /* 64-bit limbs */

static PyMethodDef methods[] = {
    {"mulmod", py_mulmod, METH_VARARGS, "mulmod(a, b, m, out, L)"},
    {"powmod", py_powmod, METH_VARARGS, "powmod(a, L, e, Le, m, out)"},
    {"fb_powmod", py_fb_powmod, METH_VARARGS, "fb_powmod(table, w, nwin, e, Le, m, out, L)"},
    {"encrypt", py_encrypt, METH_VARARGS, "encrypt(m, Ln, obf, n, nsq, out, Lc)"},
    {"bucket_prod", py_bucket_prod, METH_VARARGS, "bucket_prod(a, ids, F, nb, m, out, L)"},
    {"decrypt", py_decrypt, METH_VARARGS, "decrypt(c, Lc, p, q, hp, hq, qinv, out, Ln, Lh)"},
    {"crt", py_crt, METH_VARARGS, "crt(xp, Lp, xq, Lq, p2, q2, q2inv, out, L)"},
    {"first_outside", py_first_outside, METH_VARARGS, "first_outside(a, L, top) -> first row 0 or >= top, or -1"},
    {"check_range", py_check_range, METH_VARARGS, "check_range(a, L, n, Ln, nsq) -> first bad row or -1"},
#ifdef HEFL_OU_KERNELS
    {"fbt_prod", py_fbt_prod, METH_VARARGS, "fbt_prod(init, Li, t1, lev1, e1, Le1, t2, t2n, lev2, e2, Le2, neg, m, rk, out, L)"},
    {"signed_mag", py_signed_mag, METH_VARARGS, "signed_mag(x, Lx, n, mag, Lm, neg, maxbits) -> first bad row or -1"},
    {"ou_decrypt", py_ou_decrypt, METH_VARARGS, "ou_decrypt(c, Lc, p, Lp, p2, Lp2, t, Lt, gpinv, n, out, Ln)"},
    {"mulmod_mpn", py_mulmod_mpn, METH_VARARGS, "mulmod_mpn(a, b, m, out, L)"},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_native", "GMP batch kernels for hefl", -1, methods};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&moddef); }
