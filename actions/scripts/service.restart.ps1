# op: service.restart
$DataB64 = '__FAILOVER_DATA__'
$ErrorActionPreference = 'Stop'
try {
    $Data = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($DataB64)) | ConvertFrom-Json
    $name = [string]$Data.service
    $timeout = [TimeSpan]::FromSeconds([double]$Data.timeout_s)
    # Get-Service -Name treats * ? [ ] as wildcards: an exact name must match exactly one service.
    if ($name -eq '' -or $name -match '[\*\?\[\]]') {
        throw "invalid service name '$name': wildcard characters are not allowed"
    }
    $found = @(Get-Service -Name $name)
    if ($found.Count -ne 1) {
        throw "expected exactly one service named '$name', found $($found.Count)"
    }
    $svc = $found[0]
    if ($svc.Status -ne 'Stopped') {
        Stop-Service -InputObject $svc -NoWait
        try {
            $svc.WaitForStatus('Stopped', $timeout)
        }
        catch {
            $svc.Refresh()
            throw "service '$name' did not stop within $($timeout.TotalSeconds) s: stuck in $([string]$svc.Status)"
        }
    }
    $svc.Start()
    try {
        $svc.WaitForStatus('Running', $timeout)
    }
    catch {
        $svc.Refresh()
        throw "service '$name' did not start within $($timeout.TotalSeconds) s: stuck in $([string]$svc.Status)"
    }
    $svc.Refresh()
    [ordered]@{
        ok      = $true
        service = $svc.ServiceName
        state   = [string]$svc.Status
    } | ConvertTo-Json -Compress
}
catch {
    [ordered]@{ ok = $false; error = $_.Exception.Message } | ConvertTo-Json -Compress
    exit 1
}
