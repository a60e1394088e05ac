// Python module async_io_op: the native aio handle over raw host addresses (no libtorch).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "async_io.h"

#ifndef DS_SOURCE_HASH
#define DS_SOURCE_HASH "unknown"
#endif

namespace py = pybind11;

PYBIND11_MODULE(async_io_op, m) {
    using ds_aio::AioHandle;
    m.doc() = "DeepSpeed-compatible async file I/O (O_DIRECT, thread pool; ds-ops-cpu)";
    m.attr("SOURCE_HASH") = DS_SOURCE_HASH;
    m.attr("ENGINE") = "threadpool";
    m.attr("ALIGNMENT") = ds_aio::kAlign;
    py::class_<AioHandle>(m, "NativeHandle")
        .def(py::init<int64_t, int, bool, bool, int>(), py::arg("block_size"), py::arg("queue_depth"),
             py::arg("single_submit"), py::arg("overlap_events"), py::arg("intra_op_parallelism"))
        .def("submit", &AioHandle::submit, py::arg("read"), py::arg("buffer"), py::arg("nbytes"), py::arg("path"),
             py::arg("file_offset"), py::arg("async_op"), py::call_guard<py::gil_scoped_release>())
        .def("wait", &AioHandle::wait, py::call_guard<py::gil_scoped_release>())
        .def("pending", &AioHandle::pending)
        .def("block_size", &AioHandle::block_size)
        .def("queue_depth", &AioHandle::queue_depth)
        .def("single_submit", &AioHandle::single_submit)
        .def("overlap_events", &AioHandle::overlap_events)
        .def("intra_op_parallelism", &AioHandle::intra_op_parallelism)
        .def("num_threads", &AioHandle::num_threads)
        .def("direct_bytes", &AioHandle::direct_bytes)
        .def("buffered_bytes", &AioHandle::buffered_bytes);
    m.def("direct_io_supported", &ds_aio::direct_io_supported, py::arg("folder"),
          "Whether O_DIRECT files can be written in folder (False on tmpfs).");
    m.def("lock_memory", &ds_aio::lock_memory, py::arg("ptr"), py::arg("nbytes"));
    m.def("unlock_memory", &ds_aio::unlock_memory, py::arg("ptr"), py::arg("nbytes"));
}
