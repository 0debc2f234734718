# Read by Cython with link_metrics.py (its pure-Python mode), which stays plain Python:
# compiled, LinkMetrics is an extension type whose state is in C fields, and a
# module that cimports it and declares its metrics a LinkMetrics (the card host
# link: adapters/card/hostlink.pxd) counts every answer with a C call to
# add_hashed, giving the key's hash it keeps with the key: a key is a tuple of
# tuples, which Python hashes anew for every dict operation.  Every field is public.
cdef class LinkMetrics:
    cdef public dict counters, _children
    cdef public object _listener, link
    cpdef add(self, counter, amount=*)
    cdef add_hashed(self, counter, Py_hash_t known, amount)


cdef extern from *:
    """
    /* A dict's item (a new reference; dflt when absent) and its store, for a key whose
       hash is known: before 3.13 with CPython's _KnownHash functions, else as usual. */
    static CYTHON_INLINE PyObject *payswitch_dict_get_known(PyObject *d, PyObject *key, Py_hash_t hash,
                                                            PyObject *dflt) {
    #if PY_VERSION_HEX < 0x030D0000
        PyObject *v = _PyDict_GetItem_KnownHash(d, key, hash);
    #else
        PyObject *v = PyDict_GetItemWithError(d, key);
    #endif
        if (v == NULL) {
            if (PyErr_Occurred()) return NULL;
            v = dflt;
        }
        Py_INCREF(v);
        return v;
    }
    static CYTHON_INLINE int payswitch_dict_set_known(PyObject *d, PyObject *key, PyObject *value, Py_hash_t hash) {
    #if PY_VERSION_HEX < 0x030D0000
        return _PyDict_SetItem_KnownHash(d, key, value, hash);
    #else
        return PyDict_SetItem(d, key, value);
    #endif
    }
    """
    object payswitch_dict_get_known(dict d, object key, Py_hash_t hash, object dflt)
    int payswitch_dict_set_known(dict d, object key, object value, Py_hash_t hash) except -1
