// UniMed for Orthanc — SR writer: TID 1001 observation context.  The observer
// is the model, a device (TID 1002 / 1004), made with DCMTK's
// TID1001_ObservationContext::addDeviceObserver.

#include "sr_internal.h"

namespace udcm_sr {

static const char *const kDefaultManufacturer = "UniMed for Orthanc";

DeviceIdentity device_identity(const udcm_sr_request *req)
{
    DeviceIdentity d;
    d.manufacturer = empty(req->manufacturer) ? kDefaultManufacturer : req->manufacturer;
    d.model_label = std::string(req->model_name) + " " + req->model_version;
    d.software = empty(req->software_version) ? req->model_version : req->software_version;
    return d;
}

// Observer Type = Device, Device Observer UID / Name / Manufacturer / Model
// Name.  These are TEXT items (no length limit), so they carry the whole
// values; the header's Long Strings get them cut (long_string_value).
void add_observer_context(TID1001_ObservationContext &context, const udcm_sr_request *req,
                          const DeviceIdentity &device)
{
    const std::string name = empty(req->device_observer_name) ? req->model_name : req->device_observer_name;
    check(context.addDeviceObserver(device_observer_uid(req).c_str(), name.c_str(), device.manufacturer.c_str(),
                                    device.model_label.c_str()),
          "observer context (TID 1002)");
}

}  // namespace udcm_sr
