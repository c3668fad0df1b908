// pybind11 module stepgrpo_fast._C: the batched key-step matcher and StepRVR check.
//
// Inputs are read while holding the GIL (texts as UTF-8 views into the str objects, kept alive
// by holding references; key-step sets copied and de-duplicated), then the GIL is released for
// the multithreaded work. Error messages match stepgrpo_fast/rewards/matching.py word for word.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "matcher.hpp"
#include "normalise.hpp"
#include "sections.hpp"
#include "unicode.hpp"
#include "validity.hpp"

namespace py = pybind11;
using namespace stepgrpo;

namespace {

std::string type_name(PyObject* o) { return py::str(py::type::handle_of(py::handle(o)).attr("__name__")); }

// UTF-8 bytes of a str (lone surrogates encoded with "surrogatepass") or the bytes of a bytes
// object. `keep` receives a reference that keeps the returned view alive; with
// `borrow_ok` the caller promises `o` itself outlives the use of the view (only while the GIL is
// held), so only a newly encoded object is kept.
Bytes utf8_view(PyObject* o, std::vector<py::object>& keep, const char* what, std::size_t index,
                bool borrow_ok = false) {
    if (PyUnicode_Check(o)) {
        Py_ssize_t size = 0;
        const char* data = PyUnicode_AsUTF8AndSize(o, &size);
        if (data != nullptr) {
            if (!borrow_ok) keep.push_back(py::reinterpret_borrow<py::object>(o));
            return Bytes(data, static_cast<std::size_t>(size));
        }
        PyErr_Clear();
        PyObject* encoded = PyUnicode_AsEncodedString(o, "utf-8", "surrogatepass");
        if (encoded == nullptr) throw py::error_already_set();
        keep.push_back(py::reinterpret_steal<py::object>(encoded));
        o = encoded;
    } else if (!PyBytes_Check(o)) {
        throw py::type_error(std::string(what) + "[" + std::to_string(index) +
                             "] must be str or bytes, got " + type_name(o));
    } else {
        keep.push_back(py::reinterpret_borrow<py::object>(o));
    }
    return Bytes(PyBytes_AS_STRING(o), static_cast<std::size_t>(PyBytes_GET_SIZE(o)));
}

void collect_texts(const py::list& texts, std::vector<Bytes>& views, std::vector<py::object>& keep) {
    const std::size_t n = static_cast<std::size_t>(PyList_GET_SIZE(texts.ptr()));
    views.clear();
    views.reserve(n);
    keep.reserve(keep.size() + n);
    for (std::size_t i = 0; i < n; ++i)
        views.push_back(utf8_view(PyList_GET_ITEM(texts.ptr(), i), keep, "completions", i));
}

// Open-addressing hash table from 64-bit keys to set indices (several entries may share a key).
// Sized once for the batch, so lookups and inserts never allocate.
class FlatTable {
public:
    // Empties the table and sizes it for n entries (load factor <= 1/2), reusing its memory.
    void reset(std::size_t n) {
        std::size_t size = 16;
        while (size < 2 * n + 2) size <<= 1;
        keys_.assign(size, 0);
        values_.assign(size, -1);
        mask_ = size - 1;
    }
    // Calls fn(value) for each entry with `key` until fn returns true; returns that value or -1.
    template <class Fn>
    int find(std::uint64_t key, Fn&& fn) const {
        for (std::size_t i = mix(key) & mask_; values_[i] >= 0; i = (i + 1) & mask_)
            if (keys_[i] == key && fn(values_[i])) return values_[i];
        return -1;
    }
    void insert(std::uint64_t key, int value) {
        std::size_t i = mix(key) & mask_;
        while (values_[i] >= 0) i = (i + 1) & mask_;
        keys_[i] = key;
        values_[i] = value;
    }

private:
    static std::size_t mix(std::uint64_t k) {
        k ^= k >> 33;
        k *= 0xff51afd7ed558ccdull;
        k ^= k >> 33;
        return static_cast<std::size_t>(k);
    }
    std::vector<std::uint64_t> keys_;
    std::vector<int> values_;
    std::size_t mask_ = 0;
};

std::uint64_t mix_hash(std::uint64_t h, std::uint64_t v) {
    return (h ^ v) * 0x100000001b3ull + 0x9e3779b97f4a7c15ull;
}

// Visits one record's key steps: on_form(str) per form, end_group() after each group, in order.
// Raises TypeError/ValueError naming the record index on a bad layout (messages as in
// matching.py).
template <class OnForm, class EndGroup>
void walk_key_steps(PyObject* item, std::size_t i, OnForm&& on_form, EndGroup&& end_group) {
    auto where = [i] { return "key_steps[" + std::to_string(i) + "]"; };
    if (item == Py_None) return;
    if (PyDict_Check(item)) {
        PyObject* steps = PyDict_GetItemString(item, "Steps");  // borrowed
        if (steps == nullptr) throw py::value_error(where() + " is a dict without a 'Steps' entry");
        if (!PyList_Check(steps) && !PyTuple_Check(steps))
            throw py::type_error(where() + "['Steps'] must be a list of key-step groups, got " +
                                 type_name(steps));
        item = steps;
    } else if (!PyList_Check(item) && !PyTuple_Check(item)) {
        throw py::type_error(where() +
                             " must be a list of key-step groups or a {'Steps': [...]} dict, got " +
                             type_name(item));
    }
    const Py_ssize_t num_groups = PySequence_Fast_GET_SIZE(item);
    PyObject** group_items = PySequence_Fast_ITEMS(item);
    for (Py_ssize_t j = 0; j < num_groups; ++j) {
        PyObject* group = group_items[j];
        if (PyUnicode_Check(group)) {
            on_form(group);
            end_group();
            continue;
        }
        if (!PyList_Check(group) && !PyTuple_Check(group))
            throw py::type_error(where() + " group " + std::to_string(j) +
                                 " must be a string or a list of strings, got " + type_name(group));
        const Py_ssize_t num_forms = PySequence_Fast_GET_SIZE(group);
        PyObject** form_items = PySequence_Fast_ITEMS(group);
        for (Py_ssize_t k = 0; k < num_forms; ++k) {
            if (!PyUnicode_Check(form_items[k]))
                throw py::type_error(where() + " group " + std::to_string(j) + " form " +
                                     std::to_string(k) + " must be a string, got " +
                                     type_name(form_items[k]));
            on_form(form_items[k]);
        }
        end_group();
    }
}

// Content hash of one record's key steps (str hashes are cached inside the str objects), and
// checks its layout; nothing is copied.
std::uint64_t key_steps_hash(PyObject* item, std::size_t i) {
    std::uint64_t hash = 0x84222325cbf29ce4ull;
    walk_key_steps(
        item, i,
        [&](PyObject* form) {
            // An exact str caches its hash in the object: read it without the call.
            Py_hash_t h = PyUnicode_CheckExact(form) ? reinterpret_cast<PyASCIIObject*>(form)->hash : -1;
            if (h == -1) h = PyObject_Hash(form);
            if (h == -1) throw py::error_already_set();
            hash = mix_hash(hash, static_cast<std::uint64_t>(h));
        },
        [&] { hash = mix_hash(hash, 0xA5A5A5A5ull); });
    return hash;
}

// Appends one record's key steps to `sets` as a new set.
void append_key_steps(PyObject* item, std::size_t i, KeyStepSets& sets, std::vector<py::object>& temps) {
    sets.begin_set();
    walk_key_steps(
        item, i, [&](PyObject* form) { sets.add_form(utf8_view(form, temps, "key_steps", i, true)); },
        [&] { sets.end_group(); });
    sets.end_set();
}

// Does one record's key steps equal set s of `sets`, group by group and form by form?
bool same_as_set(PyObject* item, std::size_t i, const KeyStepSets& sets, std::size_t s,
                 std::vector<py::object>& temps) {
    std::size_t g = sets.group_begin(s);
    const std::size_t groups_end = sets.group_end(s);
    std::size_t f = g < groups_end ? sets.form_begin(g) : 0;
    bool same = true;
    walk_key_steps(
        item, i,
        [&](PyObject* form) {
            if (!same) return;
            if (g >= groups_end || f >= sets.form_end(g) ||
                utf8_view(form, temps, "key_steps", i, true) != sets.form(f)) {
                same = false;
                return;
            }
            ++f;
        },
        [&] {
            if (!same) return;
            if (g >= groups_end || f != sets.form_end(g)) {
                same = false;
                return;
            }
            ++g;
            if (g < groups_end) f = sets.form_begin(g);
        });
    return same && g == groups_end;
}

// Everything a batch call needs besides its inputs. One instance per calling thread is reused
// across calls (fresh multi-megabyte buffers would page-fault on every batch); a re-entrant call
// on the same thread (possible only through a str subclass's __hash__) gets its own instance.
struct CallBuffers {
    KeyStepSets sets;
    FlatTable by_identity, by_hash;
    std::vector<int> set_index;
    std::vector<Bytes> views;
    std::vector<py::object> keep;
    std::vector<py::object> temps;
    MatchWorkspace workspace;
    bool busy = false;
};

class BorrowedBuffers {
public:
    BorrowedBuffers() {
        static thread_local CallBuffers shared;
        if (shared.busy) {
            owned_ = std::make_unique<CallBuffers>();
            buffers_ = owned_.get();
        } else {
            buffers_ = &shared;
        }
        buffers_->busy = true;
    }
    ~BorrowedBuffers() {
        buffers_->keep.clear();  // drop the references to the caller's strings now
        buffers_->temps.clear();
        buffers_->busy = false;
        if (buffers_->set_index.capacity() > kKeepAtMost) *buffers_ = CallBuffers();  // huge batch
    }
    CallBuffers& get() { return *buffers_; }

private:
    static constexpr std::size_t kKeepAtMost = 1 << 16;
    CallBuffers* buffers_ = nullptr;
    std::unique_ptr<CallBuffers> owned_;
};

// Distinct key-step sets of the batch plus, per record, the index of its set. Records holding the
// same object are recognised by identity, equal copies by a hash plus a full comparison.
void collect_key_steps(const py::list& key_steps, CallBuffers& buffers) {
    KeyStepSets& sets = buffers.sets;
    std::vector<int>& set_index = buffers.set_index;
    FlatTable& by_identity = buffers.by_identity;
    FlatTable& by_hash = buffers.by_hash;
    std::vector<py::object>& temps = buffers.temps;
    const std::size_t n = static_cast<std::size_t>(PyList_GET_SIZE(key_steps.ptr()));
    sets.clear();
    set_index.assign(n, 0);
    by_identity.reset(n);
    by_hash.reset(n);
    PyObject* previous = nullptr;
    for (std::size_t i = 0; i < n; ++i) {
        PyObject* item = PyList_GET_ITEM(key_steps.ptr(), i);
        if (item == previous) {  // TRL repeats each prompt's record for its group of completions
            set_index[i] = set_index[i - 1];
            continue;
        }
        previous = item;
        const auto identity = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(item));
        int id = by_identity.find(identity, [](int) { return true; });
        if (id < 0) {
            // Hash first and compare with the sets seen so far; copy the forms only when new.
            temps.clear();
            const std::uint64_t hash = key_steps_hash(item, i);
            id = by_hash.find(hash, [&](int c) {
                return same_as_set(item, i, sets, static_cast<std::size_t>(c), temps);
            });
            if (id < 0) {
                append_key_steps(item, i, sets, temps);
                id = static_cast<int>(sets.num_sets() - 1);
                by_hash.insert(hash, id);
            }
            by_identity.insert(identity, id);
        }
        set_index[i] = id;
    }
}

py::list to_list(const std::vector<double>& values) {
    py::list out(values.size());
    for (std::size_t i = 0; i < values.size(); ++i)
        PyList_SET_ITEM(out.ptr(), i, PyFloat_FromDouble(values[i]));
    return out;
}

py::list as_list(const py::handle& seq, const char* what) {
    if (PyList_Check(seq.ptr())) return py::reinterpret_borrow<py::list>(seq);
    if (PyTuple_Check(seq.ptr())) return py::reinterpret_steal<py::list>(PySequence_List(seq.ptr()));
    throw py::type_error(std::string(what) + " must be a list, got " + type_name(seq.ptr()));
}

Mode mode_from(const std::string& mode) {
    try {
        return parse_mode(mode);
    } catch (const std::invalid_argument& e) {
        throw py::value_error(e.what());
    }
}

unsigned threads_from(int num_threads, std::size_t n) {
    if (num_threads < 0)
        throw py::value_error("num_threads must be >= 0 (0 = all cores), got " + std::to_string(num_threads));
    return resolve_threads(num_threads, n);
}

py::list py_match_key_steps(const py::object& texts_obj, const py::object& key_steps_obj,
                            const std::string& mode_name, int num_threads) {
    const Mode mode = mode_from(mode_name);
    const py::list texts = as_list(texts_obj, "completions");
    const py::list key_steps = as_list(key_steps_obj, "key_steps");
    if (texts.size() != key_steps.size())
        throw py::value_error("completions and key_steps differ in length: " +
                              std::to_string(texts.size()) + " vs " + std::to_string(key_steps.size()));
    BorrowedBuffers borrowed;
    CallBuffers& buffers = borrowed.get();
    collect_texts(texts, buffers.views, buffers.keep);
    collect_key_steps(key_steps, buffers);
    const unsigned threads = threads_from(num_threads, buffers.views.size());
    const std::vector<double>* k = nullptr;
    {
        py::gil_scoped_release release;
        k = &match_batch(buffers.views, buffers.sets, buffers.set_index, mode, threads,
                         buffers.workspace);
    }
    return to_list(*k);
}

py::list py_step_validity(const py::object& texts_obj, const std::string& mode_name, int num_threads) {
    const Mode mode = mode_from(mode_name);
    const py::list texts = as_list(texts_obj, "completions");
    std::vector<py::object> keep;
    std::vector<Bytes> views;
    collect_texts(texts, views, keep);
    const unsigned threads = threads_from(num_threads, views.size());
    std::vector<double> valid;
    {
        py::gil_scoped_release release;
        valid = validity_batch(views, mode, threads);
    }
    return to_list(valid);
}

Bytes single_text(const py::handle& text, std::vector<py::object>& keep) {
    return utf8_view(text.ptr(), keep, "text", 0);
}

py::list py_segment(const py::handle& text) {
    std::vector<py::object> keep;
    std::vector<Section> sections;
    segment_sections(single_text(text, keep), sections);
    py::list out;
    for (const Section& s : sections)
        out.append(py::make_tuple(s.kind, s.number, s.body_begin, s.body_end));
    return out;
}

py::list py_official_step_bodies(const py::handle& text) {
    std::vector<py::object> keep;
    std::vector<Span> spans;
    official_step_bodies(single_text(text, keep), spans);
    py::list out;
    for (const Span& s : spans) out.append(py::make_tuple(s.begin, s.end));
    return out;
}

py::bytes py_unicode_lower(const py::handle& text) {
    std::vector<py::object> keep;
    std::string out;
    unicode_lower_into(single_text(text, keep), out);
    return py::bytes(out.data(), out.size());
}

py::bytes py_normalise(const py::handle& text) {
    std::vector<py::object> keep;
    const std::string out = normalise(single_text(text, keep));
    return py::bytes(out.data(), out.size());
}

py::tuple py_normalise_body(const py::handle& text) {
    std::vector<py::object> keep;
    std::string out;
    std::vector<std::uint32_t> glued;
    normalise_into(single_text(text, keep), out, &glued);
    py::list positions;
    for (std::uint32_t p : glued) positions.append(p);
    return py::make_tuple(py::bytes(out.data(), out.size()), positions);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "stepgrpo_fast C++ core: section segmentation, normalisation, batched key-step matching";
    m.def("match_key_steps", &py_match_key_steps, py::arg("completions"), py::arg("key_steps"),
          py::arg("mode") = "paper", py::arg("num_threads") = 0,
          "k (fraction of key-step groups found in the step sections) for every completion.\n"
          "completions: list[str|bytes] (N); key_steps: list (N) of None, list of groups or\n"
          "{'Steps': [...]} dict; returns list[float] (N). Runs without the GIL.");
    m.def("step_validity", &py_step_validity, py::arg("completions"), py::arg("mode") = "paper",
          py::arg("num_threads") = 0, "StepRVR (1.0 / 0.0) for every completion (list[str|bytes]).");
    m.def("segment", &py_segment, py::arg("text"),
          "Paper-mode sections of one text: list of (kind, number, body_begin, body_end) byte offsets.");
    m.def("official_step_bodies", &py_official_step_bodies, py::arg("text"),
          "Official-mode step bodies of one text: list of (begin, end) byte offsets.");
    m.def("normalise", &py_normalise, py::arg("text"), "Paper-mode normalisation of one text (bytes).");
    m.def("normalise_body", &py_normalise_body, py::arg("text"),
          "Paper-mode normalisation of one text plus its glued positions: (bytes, list[int]).");
    m.def("unicode_lower", &py_unicode_lower, py::arg("text"),
          "Official mode's str.lower() of one text, as UTF-8 bytes (surrogatepass).");
    m.attr("UNICODE_VERSION") = unicode_version();
    m.attr("KIND_DESCRIPTION") = static_cast<int>(kDescription);
    m.attr("KIND_RATIONALES") = static_cast<int>(kRationales);
    m.attr("KIND_THINK") = static_cast<int>(kThink);
    m.attr("KIND_STEP") = static_cast<int>(kStep);
    m.attr("KIND_FINAL_ANSWER") = static_cast<int>(kFinalAnswer);
    m.attr("KIND_OTHER") = static_cast<int>(kOther);
    m.attr("STEP_NUMBER_OVERFLOW") = kStepNumberOverflow;
}
